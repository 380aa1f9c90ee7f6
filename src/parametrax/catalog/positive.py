"""Elementwise constraints: ``Positive`` (``> 0``) and ``Interval`` (``(low, high)``).

Stateless, shape- and dtype-keeping, with exact inverses on their sets: ``forward(right_inverse(y))
== y`` up to rounding, including for very large and very small positive values (the inverse
softplus is computed stably, see :func:`parametrax._numerics.inv_softplus`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from parametrax._core import Parametrization
from parametrax._errors import ParametrizationError, ParametrizationTypeError
from parametrax._numerics import (
    POSITIVE_MAPS,
    check_scalar_map,
    floor_tiny,
    has_inverse,
    inverse_or_raise,
    require_inexact,
    resolve_scalar_map,
)

__all__ = ["Positive", "Interval"]

Array = jax.Array


class Positive(Parametrization):
    r"""Positive values: ``x -> f(x)`` with ``f`` ``"softplus"`` (default) or ``"exp"`` (or a
    callable / ``(f, f_inverse)`` pair onto ``(0, inf)``).

    Shapes: any. ``right_inverse`` is the exact inverse on ``y > 0`` (``log`` or the stable
    inverse softplus, exact down to the smallest normal number). Values ``<= 0`` are first
    raised to that smallest number, so registering a kernel with negative entries gives finite
    but nearly dead raw values there: register on positive values, or assign a ``sample``.

    >>> import jax.numpy as jnp
    >>> from parametrax.catalog.positive import Positive
    >>> p = Positive()
    >>> y = jnp.array([1e-20, 1.0, 1e4])
    >>> bool(jnp.allclose(p(p.right_inverse(y)), y, rtol=1e-6))
    True
    """

    f: str | Callable | tuple = "softplus"

    def __post_init__(self):
        check_scalar_map("Positive", "f", self.f, POSITIVE_MAPS)


    @property
    def has_right_inverse(self) -> bool:
        """False when ``f`` was given as a callable without its inverse."""
        return has_inverse(self.f)

    def forward(self, x: Array) -> Array:
        require_inexact(self, x, real=True)
        return resolve_scalar_map(self.f).f(x)

    def right_inverse(self, value: Array) -> Array:
        require_inexact(self, value, real=True)
        return inverse_or_raise("Positive", resolve_scalar_map(self.f))(floor_tiny(value))

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``all(x > 0)`` (a strict inequality: ``atol`` is not used)."""
        del atol
        return jnp.all(x > 0)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``f(z)``, ``z`` standard normal."""
        return self.forward(jax.random.normal(key, tuple(shape), dtype))


class Interval(Parametrization):
    r"""Values in the open interval ``(low, high)``: ``x -> low + (high - low) sigmoid(x)``.

    Shapes: any. ``right_inverse(y) = logit((y - low) / (high - low))``, exact inside the
    interval; values at or beyond its ends are first moved to the nearest representable
    interior fraction (finite raw values).

    >>> import jax.numpy as jnp
    >>> from parametrax.catalog.positive import Interval
    >>> Interval(-1.0, 3.0)(jnp.array([-50.0, 0.0, 50.0])).tolist()
    [-1.0, 1.0, 3.0]
    """

    low: float
    high: float

    def __post_init__(self):
        for name in ("low", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ParametrizationTypeError(
                    f"`Interval`: `{name}` must be a Python float; got {type(v).__name__} {v!r} "
                    "(arrays are not hashable configuration)."
                )
        if not self.low < self.high:
            raise ParametrizationError(
                f"`Interval`: needs `low` < `high`; got low={self.low!r}, high={self.high!r}."
            )

    def forward(self, x: Array) -> Array:
        require_inexact(self, x, real=True)
        return self.low + (self.high - self.low) * jax.nn.sigmoid(x)

    def right_inverse(self, value: Array) -> Array:
        require_inexact(self, value, real=True)
        p = (value - self.low) / (self.high - self.low)
        p = jnp.clip(p, jnp.finfo(p.dtype).tiny, 1 - jnp.finfo(p.dtype).epsneg)
        return jnp.log(p) - jnp.log1p(-p)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``all(low < x < high)`` (strict: ``atol`` is not used)."""
        del atol
        return jnp.all((x > self.low) & (x < self.high))

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Uniform on ``(low, high)``."""
        u = jax.random.uniform(key, tuple(shape), dtype, minval=1e-3, maxval=1.0 - 1e-3)
        return self.low + (self.high - self.low) * u
