"""Strictly increasing vectors: ``Ordered`` (cumulative sums of positive steps along an axis)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from parametrax._core import Parametrization
from parametrax._numerics import (
    POSITIVE_MAPS,
    check_axis_field,
    check_scalar_map,
    floor_tiny,
    has_inverse,
    inverse_or_raise,
    normalize_axes,
    require_inexact,
    resolve_scalar_map,
)

__all__ = ["Ordered"]

Array = jax.Array


def _axis(p, x) -> int:
    """``p.axis`` as a non-negative axis of ``x`` (real floating point); AxisError if out of range."""
    require_inexact(p, x, real=True)
    return normalize_axes(p, p.axis, x.shape)[0]


class Ordered(Parametrization):
    r"""Strictly increasing vectors along ``axis``:
    ``y_0 = x_0``, ``y_i = y_{i-1} + f(x_i)`` (``f``: ``"softplus"`` default, or ``"exp"`` as
    TFP's ``Ascending``).

    Shapes: any with at least one dimension. ``right_inverse``: ``x_0 = y_0``,
    ``x_i = f^{-1}(y_i - y_{i-1})`` (exact for increasing ``y``; non-increasing steps are first
    raised to the smallest normal number, so the raw value stays finite).
    """

    axis: int = -1
    f: str | Callable | tuple = "softplus"

    def __post_init__(self):
        check_axis_field(self, allow_tuple=False)
        check_scalar_map("Ordered", "f", self.f, POSITIVE_MAPS)


    @property
    def has_right_inverse(self) -> bool:
        """False when ``f`` was given as a callable without its inverse."""
        return has_inverse(self.f)

    def forward(self, x: Array) -> Array:
        ax = _axis(self, x)
        x = jnp.moveaxis(x, ax, -1)
        steps = resolve_scalar_map(self.f).f(x[..., 1:])
        y = jnp.concatenate([x[..., :1], x[..., :1] + jnp.cumsum(steps, axis=-1)], axis=-1)
        return jnp.moveaxis(y, -1, ax)

    def right_inverse(self, value: Array) -> Array:
        ax = _axis(self, value)
        y = jnp.moveaxis(value, ax, -1)
        inv = inverse_or_raise("Ordered", resolve_scalar_map(self.f))
        x = jnp.concatenate([y[..., :1], inv(floor_tiny(jnp.diff(y, axis=-1)))], axis=-1)
        return jnp.moveaxis(x, -1, ax)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``all(diff(x, axis) > 0)`` (strict: ``atol`` is not used)."""
        del atol
        ax = _axis(self, x)
        return jnp.all(jnp.diff(x, axis=ax) > 0)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Sorted standard normal draws (the order statistics)."""
        ax = _axis(self, jax.ShapeDtypeStruct(tuple(shape), dtype))
        return jnp.sort(jax.random.normal(key, tuple(shape), dtype), axis=ax)
