"""Elementwise constraints: ``Positive`` (``> 0``) and ``Interval`` (``(low, high)``).

Stateless, shape- and dtype-keeping, with exact inverses on their sets: ``forward(right_inverse(y))
== y`` up to rounding, including for very large and very small positive values (the inverse
softplus is computed stably, see :func:`parametrax._numerics.inv_softplus`).

Both sets are open. Every raw value maps into the set (the forward maps are clamped to the
representable interior), and a value on or beyond the boundary is projected strictly inside by
the one rule of :func:`parametrax._numerics.scalar.interior_margin`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from parametrax._core import Parametrization
from parametrax._errors import ParametrizationError, ParametrizationTypeError
from parametrax._numerics import (
    POSITIVE_MAPS,
    check_scalar_map,
    has_inverse,
    interior_margin,
    inverse_or_raise,
    positive_image,
    raise_into,
    require_inexact,
    resolve_scalar_map,
    widened,
)

__all__ = ["Positive", "Interval"]

Array = jax.Array


class Positive(Parametrization):
    r"""Positive values: ``x -> f(x)`` with ``f`` ``"softplus"`` (default) or ``"exp"`` (or a
    callable / ``(f, f_inverse)`` pair onto ``(0, inf)``).

    Shapes: any. ``forward`` is ``max(f(x), tiny)`` (``tiny`` the smallest positive normal
    number of the dtype): ``softplus``/``exp`` underflow to exactly 0 below about -87
    (float32), so the clamp makes every raw value an optimizer can reach map into the set; the
    image is exactly ``[tiny, inf)``. ``right_inverse`` is the exact inverse on that image
    (``log`` or the stable inverse softplus). Values below ``tiny`` (``<= 0``: off the set) are
    raised to the margin ``m = interior_margin(dtype)`` (``1e-2``; ``0.2`` in half precision),
    an absolute floor on softplus' natural scale 1: their raw value is ``f^{-1}(m) = -4.6``,
    where the derivative is ``~m`` and gradients reach it.

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
        return positive_image(resolve_scalar_map(self.f).f(x))

    def right_inverse(self, value: Array) -> Array:
        require_inexact(self, value, real=True)
        inv = inverse_or_raise("Positive", resolve_scalar_map(self.f))
        return inv(raise_into(value, ~(value >= jnp.finfo(value.dtype).tiny)))

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Membership: ``all(x > 0)`` (strict, exact: ``atol`` is not used; a value that
        underflowed to 0 is out)."""
        del atol
        return jnp.all(x > 0)

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``f(z)``, ``z`` standard normal."""
        return self.forward(jax.random.normal(key, tuple(shape), dtype))


@widened
def _interval_map(x: Array, *, low: float, high: float) -> Array:
    return low + (high - low) * jax.nn.sigmoid(x)


@widened
def _interval_inverse(value: Array, *, low: float, high: float, m: float) -> Array:
    p = (value - low) / (high - low)
    # off the set (at or beyond an end, or NaN): the fraction m from the nearer end
    inside = (p > 0) & (p < 1)
    p = jnp.where(inside, p, jnp.where(p >= 1, 1.0 - m, m))
    # a fraction inside but within rounding of an end keeps its logit finite
    eps = jnp.finfo(p.dtype).eps
    p = jnp.clip(p, jnp.finfo(p.dtype).tiny, 1.0 - eps / 2)
    return jnp.log(p) - jnp.log1p(-p)


class Interval(Parametrization):
    r"""Values in the open interval ``(low, high)``: ``x -> low + (high - low) sigmoid(x)``.

    Shapes: any. ``forward`` computes in at least float32 and clamps the result to the
    representable interior ``[nextafter(low, high), nextafter(high, low)]`` of the value's
    dtype: for ``|x|`` beyond ~17 (float32) ``sigmoid(x)`` rounds to 0 or 1, which would put the
    value ON an end; clamped, every raw value maps into the open interval (the image is that
    closed range of representable numbers). An interval with no representable number strictly
    inside, in the dtype used, is refused (``ParametrizationError``).

    ``right_inverse(y) = logit((y - low) / (high - low))``, exact inside the interval. Values at
    or beyond the ends are projected strictly inside: their fraction is moved to
    ``m = interior_margin(dtype)`` (``1e-2``; ``0.2`` in half precision) from the end, whose raw
    value ``logit(m) = -4.6`` keeps ``sigmoid'`` at ``~m``, so gradients reach it.

    >>> import jax.numpy as jnp
    >>> from parametrax.catalog.positive import Interval
    >>> y = Interval(-1.0, 3.0)(jnp.array([-50.0, 0.0, 50.0]))
    >>> bool(y[0] > -1.0), float(y[1]), bool(y[2] < 3.0)
    (True, 1.0, True)
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

    def _interior(self, dtype) -> tuple[Array, Array]:
        """The smallest and largest numbers of ``dtype`` strictly inside ``(low, high)``."""
        dt = np.dtype(dtype)
        lo, hi = np.asarray(self.low, dt), np.asarray(self.high, dt)
        lo_in = lo if lo > self.low else np.nextafter(lo, np.asarray(np.inf, dt))
        hi_in = hi if hi < self.high else np.nextafter(hi, np.asarray(-np.inf, dt))
        if not (self.low < float(lo_in) <= float(hi_in) < self.high):
            raise ParametrizationError(
                f"`Interval({self.low!r}, {self.high!r})`: no {dt.name} number lies strictly "
                "inside the interval; widen the interval or use a wider dtype."
            )
        return jnp.asarray(lo_in, dtype), jnp.asarray(hi_in, dtype)

    def forward(self, x: Array) -> Array:
        require_inexact(self, x, real=True)
        lo_in, hi_in = self._interior(x.dtype)
        y = _interval_map(x, low=self.low, high=self.high)
        return jnp.clip(y, lo_in, hi_in)

    def right_inverse(self, value: Array) -> Array:
        require_inexact(self, value, real=True)
        self._interior(value.dtype)
        return _interval_inverse(
            value, low=self.low, high=self.high, m=interior_margin(value.dtype)
        )

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """Membership: ``all(low < x < high)`` (strict, exact: ``atol`` is not used; a value
        rounded onto an end is out)."""
        del atol
        return jnp.all((x > self.low) & (x < self.high))

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """Uniform on ``(low, high)``."""
        u = jax.random.uniform(key, tuple(shape), dtype, minval=1e-3, maxval=1.0 - 1e-3)
        return self.low + (self.high - self.low) * u
