"""The open probability simplex: ``Simplex`` (softmax along an axis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from parametrax._core import Parametrization
from parametrax._numerics import (
    check_axis_field,
    default_atol,
    positive_image,
    raise_into,
    real_axis,
    wide_dtype,
    widened,
)

__all__ = ["Simplex"]

Array = jax.Array


@widened
def _softmax(x: Array, *, axis: int) -> Array:
    return positive_image(jax.nn.softmax(x, axis=axis))


class Simplex(Parametrization):
    r"""The open probability simplex along ``axis``: ``x -> softmax(x, axis)``.

    Shapes: any with at least one dimension. ``forward`` computes the softmax in at least
    float32 and clamps each entry to ``>= tiny`` (the smallest positive normal number): for raw
    differences beyond ~87 (float32) ``exp`` underflows to exactly 0, a point off the open
    simplex; clamped, every raw value maps into it (the sum moves by at most ``n * tiny``).

    ``right_inverse(y) = log y - mean(log y)`` (the zero-sum representative: exact for
    ``y > 0`` summing to 1; a positive vector is normalised). Entries below ``tiny`` (``<= 0``:
    off the set) are first raised to ``m * max(1, max_i y_i)`` with ``m =
    interior_margin(dtype)`` (``1e-2``; ``0.2`` in half precision), so each lands strictly
    inside, at a logit ``log m = -4.6`` below the largest where the softmax's derivative
    ``p (1 - p)`` is ``~m``: gradients reach it. The raw array keeps the value's shape, so it
    carries one redundant degree of freedom per vector (the softmax ignores shifts).
    """

    axis: int = -1

    def __post_init__(self):
        check_axis_field(self, allow_tuple=False)

    def forward(self, x: Array) -> Array:
        return _softmax(x, axis=real_axis(self, x))

    def right_inverse(self, value: Array) -> Array:
        ax = real_axis(self, value)
        off = ~(value >= jnp.finfo(value.dtype).tiny)
        top = jnp.max(jnp.where(off, 0, value), axis=ax, keepdims=True, initial=0.0)
        y = raise_into(value, off, top)
        logp = jnp.log(y.astype(wide_dtype(y.dtype)))
        return (logp - jnp.mean(logp, axis=ax, keepdims=True)).astype(value.dtype)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Membership: ``all(x > 0)`` (strict, exact) and every vector along ``axis`` sums to 1
        to ``atol`` (absolute, default ``default_atol(x.dtype)``)."""
        ax = real_axis(self, x)
        return jnp.all(x > 0) & jnp.all(
            jnp.abs(jnp.sum(x, axis=ax) - 1) <= (default_atol(x.dtype) if atol is None else atol)
        )

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Uniform on the simplex (``Dirichlet(1, ..., 1)``, via normalised exponentials)."""
        shape = tuple(shape)
        real_axis(self, jax.ShapeDtypeStruct(shape, dtype))
        e = jax.random.exponential(key, shape, dtype)
        return e / jnp.sum(e, axis=self.axis, keepdims=True)
