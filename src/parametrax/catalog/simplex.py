"""The open probability simplex: ``Simplex`` (softmax along an axis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from parametrax._core import Parametrization
from parametrax._numerics import check_axis_field, default_atol, normalize_axes, require_inexact

__all__ = ["Simplex"]

Array = jax.Array


def _axis(p, x) -> int:
    """``p.axis`` as a non-negative axis of ``x`` (real floating point); AxisError if out of range."""
    require_inexact(p, x, real=True)
    return normalize_axes(p, p.axis, x.shape)[0]


class Simplex(Parametrization):
    r"""The open probability simplex along ``axis``: ``x -> softmax(x, axis)``.

    Shapes: any with at least one dimension. ``right_inverse(y) = log y - mean(log y)`` (the
    zero-sum representative: exact for ``y > 0`` summing to 1). The raw array keeps the value's
    shape, so it carries one redundant degree of freedom per vector (the softmax ignores shifts).
    """

    axis: int = -1

    def __post_init__(self):
        check_axis_field(self, allow_tuple=False)

    def forward(self, x: Array) -> Array:
        return jax.nn.softmax(x, axis=_axis(self, x))

    def right_inverse(self, value: Array) -> Array:
        ax = _axis(self, value)
        logp = jnp.log(jnp.maximum(value, jnp.finfo(value.dtype).tiny))
        return logp - jnp.mean(logp, axis=ax, keepdims=True)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``x > 0`` and every vector sums to 1 to ``atol``."""
        ax = _axis(self, x)
        return jnp.all(x > 0) & jnp.all(jnp.abs(jnp.sum(x, axis=ax) - 1) <= (default_atol(x.dtype) if atol is None else atol))

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Uniform on the simplex (``Dirichlet(1, ..., 1)``, via normalised exponentials)."""
        shape = tuple(shape)
        _axis(self, jax.ShapeDtypeStruct(shape, dtype))
        e = jax.random.exponential(key, shape, dtype)
        return e / jnp.sum(e, axis=self.axis, keepdims=True)
