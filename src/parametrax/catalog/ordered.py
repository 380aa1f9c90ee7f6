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
    has_inverse,
    inverse_or_raise,
    raise_into,
    real_axis,
    resolve_scalar_map,
    strictly_increasing,
    widen,
)

__all__ = ["Ordered"]

Array = jax.Array


class Ordered(Parametrization):
    r"""Strictly increasing vectors along ``axis``:
    ``y_0 = x_0``, ``y_i = y_{i-1} + f(x_i)`` (``f``: ``"softplus"`` default, or ``"exp"`` as
    TFP's ``Ascending``).

    Shapes: any with at least one dimension. ``forward`` computes the cumulative sum in at
    least float32, then makes the result strictly increasing in the value's dtype: a step
    ``f(x_i)`` below half an ulp of ``y_{i-1}`` (or underflowing to 0) would round to a tie, a
    point off the set; such an entry is moved to the next representable number above the
    previous one (:func:`parametrax._numerics.scalar.strictly_increasing`; a strictly
    increasing result is kept bit for bit). So every raw value maps into the set.

    ``right_inverse``: ``x_0 = y_0``, ``x_i = f^{-1}(y_i - y_{i-1})`` (exact for strictly
    increasing ``y``). Steps below ``tiny`` (``<= 0``: ties or decreases, off the set) are
    raised to ``m * max(1, max |y|)`` with ``m = interior_margin(dtype)`` (``1e-2``; ``0.2`` in
    half precision, ~25 ulps, so the sum does not round into a tie): their raw value is
    ``f^{-1}(m) = -4.6`` or more, where gradients reach it.
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
        ax = real_axis(self, x)
        dtype = x.dtype
        x = widen(jnp.moveaxis(x, ax, -1))
        steps = resolve_scalar_map(self.f).f(x[..., 1:])
        y = jnp.concatenate([x[..., :1], x[..., :1] + jnp.cumsum(steps, axis=-1)], axis=-1)
        return jnp.moveaxis(strictly_increasing(y.astype(dtype)), -1, ax)

    def right_inverse(self, value: Array) -> Array:
        ax = real_axis(self, value)
        y = jnp.moveaxis(value, ax, -1)
        inv = inverse_or_raise("Ordered", resolve_scalar_map(self.f))
        d = jnp.diff(y, axis=-1)
        scale = jnp.max(jnp.abs(y), axis=-1, keepdims=True, initial=0.0)
        d = raise_into(d, ~(d >= jnp.finfo(d.dtype).tiny), scale)
        x = jnp.concatenate([y[..., :1], inv(d)], axis=-1)
        return jnp.moveaxis(x, -1, ax)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Membership: ``all(diff(x, axis) > 0)`` (strictly increasing; strict, exact: ``atol``
        is not used, so ties are out)."""
        del atol
        ax = real_axis(self, x)
        return jnp.all(jnp.diff(x, axis=ax) > 0)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Sorted standard normal draws (the order statistics)."""
        ax = real_axis(self, jax.ShapeDtypeStruct(tuple(shape), dtype))
        return jnp.sort(jax.random.normal(key, tuple(shape), dtype), axis=ax)
