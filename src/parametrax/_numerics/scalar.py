"""Scalar maps used by the catalog (eigenvalues, singular values, elementwise constraints).

A scalar map ``f`` is named from a closed table (``"softplus"``, ``"exp"``, ...) or given as a
hashable callable (no inverse: assignment through it is refused) or as a pair ``(f, f_inv)`` of
hashable callables. Each catalog entry lists the names it accepts; an unknown name is an error
listing them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from parametrax._errors import ParametrizationError, ParametrizationTypeError
from parametrax._numerics.checks import default_atol

Array = jax.Array

__all__ = [
    "inv_softplus",
    "ScalarMap",
    "SCALAR_MAPS",
    "POSITIVE_MAPS",
    "resolve_scalar_map",
    "check_scalar_map",
    "inverse_or_raise",
    "clip_to_image",
    "floor_tiny",
    "has_inverse",
    "interior_margin",
    "rank_floor",
    "raise_into",
    "raise_small",
    "floor_ratio",
    "positive_image",
    "strictly_increasing",
    "log_positive",
]


def inv_softplus(y: Array) -> Array:
    r"""The exact inverse of ``softplus(x) = log(1 + e^x)`` for ``y > 0``.

    Computed as ``y + log(-expm1(-y))``, which is stable at both ends: for large ``y`` the log
    term is ``log1p(-e^{-y}) -> 0`` (no ``exp(y)`` overflow) and for tiny ``y`` ``-expm1(-y)``
    keeps full relative precision (no ``log(e^y - 1)`` cancellation). ``NaN`` for ``y <= 0``.

    >>> import jax, jax.numpy as jnp
    >>> y = jnp.array([1e-30, 1e-6, 1.0, 100.0, 1e4])
    >>> bool(jnp.allclose(jax.nn.softplus(inv_softplus(y)), y, rtol=1e-6))
    True
    """
    y = jnp.asarray(y)
    return y + jnp.log(-jnp.expm1(-y))


def _scaled_sigmoid(x: Array) -> Array:
    # 2 sigmoid(x) - 1 == tanh(x / 2); the left side cancels near 0 (absolute error ~eps, so
    # relative error 1 at |x| ~ eps), tanh keeps full relative precision.
    return jnp.tanh(0.5 * x)


def _log_softplus(x: Array) -> Array:
    # log(softplus(x)) without underflow: for x < -15 softplus(x) = e^x (1 - e^x / 2 + ...) so
    # the log is x up to e^x / 2 < 2e-7 relative; softplus(x) itself underflows below ~-87.
    safe = jnp.maximum(x, -15.0)
    return jnp.where(x < -15.0, x, jnp.log(jax.nn.softplus(safe)))


def _inv_scaled_sigmoid(t: Array) -> Array:
    return jnp.log1p(t) - jnp.log1p(-t)


def _asin(t: Array) -> Array:
    return jnp.arcsin(jnp.clip(t, -1.0, 1.0))


def _identity(x: Array) -> Array:
    return x


def _abs_inverse(y: Array) -> Array:
    return jnp.maximum(y, 0.0)


@dataclasses.dataclass(frozen=True)
class ScalarMap:
    """A named scalar map with its (right) inverse and the closure of its image ``[lo, hi]``."""

    name: str
    f: Callable[[Array], Array]
    inv: Callable[[Array], Array] | None
    lo: float
    hi: float
    closed: bool = True  # whether the image contains its finite end points
    log_f: Callable[[Array], Array] | None = None  # log(f(x)) without underflow (positive maps)


SCALAR_MAPS: dict[str, ScalarMap] = {
    "softplus": ScalarMap(
        "softplus", jax.nn.softplus, inv_softplus, 0.0, float("inf"), False, _log_softplus
    ),
    "exp": ScalarMap("exp", jnp.exp, jnp.log, 0.0, float("inf"), False, _identity),
    "abs": ScalarMap("abs", jnp.abs, _abs_inverse, 0.0, float("inf")),
    "identity": ScalarMap("identity", _identity, _identity, float("-inf"), float("inf")),
    "sin": ScalarMap("sin", jnp.sin, _asin, -1.0, 1.0),
    "tanh": ScalarMap("tanh", jnp.tanh, jnp.arctanh, -1.0, 1.0, False),
    "scaled_sigmoid": ScalarMap(
        "scaled_sigmoid", _scaled_sigmoid, _inv_scaled_sigmoid, -1.0, 1.0, False
    ),
}


def check_scalar_map(owner: str, field: str, f, allowed: tuple[str, ...]) -> None:
    """Validates ``f`` at construction: a name in ``allowed``, a hashable callable, or a pair."""
    if isinstance(f, str):
        if f not in allowed:
            raise ParametrizationError(
                f"`{owner}`: unknown `{field}`={f!r}; expected one of "
                f"{', '.join(repr(a) for a in allowed)}, a callable, or a pair "
                "(f, f_inverse) of callables."
            )
        return
    if isinstance(f, tuple):
        if len(f) != 2 or not all(callable(g) for g in f):
            raise ParametrizationTypeError(
                f"`{owner}`: `{field}` given as a tuple must be a pair (f, f_inverse) of "
                f"callables; got {f!r}."
            )
    elif not callable(f):
        raise ParametrizationTypeError(
            f"`{owner}`: `{field}` must be one of {', '.join(repr(a) for a in allowed)}, a "
            f"callable, or a pair (f, f_inverse) of callables; got {type(f).__name__} {f!r}."
        )
    try:
        hash(f)
    except TypeError:
        raise ParametrizationTypeError(
            f"`{owner}`: `{field}`={f!r} is not hashable; pass a plain function (defined once, "
            "at module level) so equal configurations compare equal and jax.jit does not "
            "re-trace."
        ) from None


def resolve_scalar_map(f) -> ScalarMap:
    """The :class:`ScalarMap` for a validated ``f`` (name, callable or pair)."""
    if isinstance(f, str):
        return SCALAR_MAPS[f]
    if isinstance(f, tuple):
        fn, inv = f
        return ScalarMap(getattr(fn, "__name__", repr(fn)), fn, inv, float("-inf"), float("inf"))
    return ScalarMap(getattr(f, "__name__", repr(f)), f, None, float("-inf"), float("inf"))


def inverse_or_raise(owner: str, m: ScalarMap) -> Callable[[Array], Array]:
    if m.inv is None:
        raise NotImplementedError(
            f"`{owner}`: the scalar map `{m.name}` was given without an inverse, so values "
            "cannot be assigned (or registered) through it; pass `f=(f, f_inverse)`."
        )
    return m.inv


def clip_to_image(m: ScalarMap, y: Array, floor: Array | float) -> Array:
    """Projects ``y`` into the image of ``m`` before inverting it.

    A closed end is clipped to; an open end at 0 (softplus, exp) is floored at ``floor`` (> 0);
    an open bounded end (tanh, scaled_sigmoid) is clipped to a few ulps inside.
    """
    if m.lo == float("-inf") and m.hi == float("inf"):
        return y
    if m.closed:
        return jnp.clip(y, m.lo, m.hi)
    if m.hi == float("inf"):
        return jnp.maximum(y, m.lo + floor)
    ulp = 4 * jnp.finfo(y.dtype).eps
    return jnp.clip(y, m.lo + ulp * (m.hi - m.lo), m.hi - ulp * (m.hi - m.lo))


#: The scalar maps onto ``(0, inf)`` the positive entries accept by name.
POSITIVE_MAPS = ("softplus", "exp")


def log_positive(m: ScalarMap, x: Array) -> Array:
    """``log(f(x))`` for a map onto ``(0, inf)``, computed without underflow where ``m`` knows
    how (softplus: ``x`` itself below -15; exp: ``x``), else ``log(max(f(x), tiny))``."""
    if m.log_f is not None:
        return m.log_f(x)
    return jnp.log(positive_image(m.f(x)))


# ------------------------------------------------------------------------------------------------
# The one interior rule (issue 16): a right inverse lands STRICTLY inside an open set, with a
# margin that keeps the raw value where gradients reach it, and every raw value maps onto the set.
# ------------------------------------------------------------------------------------------------
def interior_margin(dtype) -> float:
    r"""The margin by which a projection lands inside an open set, relative to
    ``max(1, scale)`` of the value: ``max(1e-2, 20 * default_atol(dtype))``, i.e. ``1e-2`` in
    float32 / float64 and ``0.2`` in float16 / bfloat16.

    Why this size: (a) an entry raised to ``m = 1e-2`` has raw value ``inv_softplus(m) = -4.6``
    (``log m`` under exp, ``logit m`` under a sigmoid) where the map's derivative is ``~m``:
    gradients reach it (at the old floor, ``finfo.tiny``, the raw value was -87 and the
    derivative 1e-38: such entries never trained); (b) it is 100x (half precision: 20x) the
    tolerance ``default_atol`` that ``in_manifold`` and the rank checks use, and 2x-10x
    :func:`rank_floor`, so the rounding of a reconstructed product (``~n eps scale``) cannot
    bring the value back to the boundary; (c) in bfloat16 (``eps = 2^-7``) ``0.2`` is ~25 ulps,
    so cumulative sums of raised steps do not round into ties.
    """
    return max(1e-2, 20.0 * default_atol(dtype))


def rank_floor(dtype) -> float:
    r"""The smallest ratio ``σ_min / σ_max`` (eigenvalues: ``λ_min / λ_max``) that the
    forward maps of the fixed-rank and special-linear entries produce: ``10 * default_atol``
    (float32 ``1e-3``, half precision ``0.1``, float64 ``1e-8``). Ten times the tolerance of
    ``in_manifold``'s rank check, so that any raw value maps onto a matrix whose rank is
    exactly the stated one, numerically and not only in exact arithmetic."""
    return 10.0 * default_atol(dtype)


def raise_into(y: Array, off: Array, scale: Array | float = 1.0, dtype=None) -> Array:
    """``y`` with the entries where ``off`` holds replaced by ``interior_margin(dtype) *
    max(1, scale)`` (``scale`` broadcasts against ``y``; ``dtype``: the value's, when ``y`` is
    computed wider): the one projection of values on or beyond the boundary ``0`` of an open
    set. Other entries are kept exactly."""
    margin = interior_margin(y.dtype if dtype is None else dtype)
    m = margin * jnp.maximum(1.0, jnp.asarray(scale, y.dtype))
    return jnp.where(off, jnp.broadcast_to(m, y.shape).astype(y.dtype), y)


def raise_small(sigma: Array, top: Array, ratio: float, dtype=None) -> Array:
    """Singular values / eigenvalues ``sigma`` with those below ``max(ratio * max(1, top),
    tiny)`` (``top`` the largest, broadcasting against ``sigma``) raised to ``interior_margin *
    max(1, top)`` by :func:`raise_into`: the projection of the positive-spectrum entries
    (fixed rank, invertible, positive definite, special linear) onto their open sets. The
    ``max(1, .)`` is the library's one tolerance convention (:func:`default_atol`)."""
    tiny = jnp.finfo(sigma.dtype).tiny
    off = ~(sigma >= jnp.maximum(ratio * jnp.maximum(1.0, top), tiny))
    return raise_into(sigma, off, top, dtype)


def floor_ratio(sigma: Array, ratio: float) -> Array:
    """``max(sigma, ratio * max(1, max(sigma)))`` along the last axis: the forward floor of
    the fixed-rank entries (``ratio = rank_floor(dtype)``)."""
    top = jnp.max(sigma, axis=-1, keepdims=True)
    return jnp.maximum(sigma, ratio * jnp.maximum(1.0, top))


def positive_image(y: Array) -> Array:
    """``max(y, tiny)``: the forward clamp of the maps onto ``(0, inf)``. ``softplus(x)`` and
    ``exp(x)`` underflow to exactly 0 (a point off the set) for ``x`` below about -87 (float32,
    bfloat16) / -708 (float64); clamped, the image is exactly the positive normal numbers
    ``[tiny, inf)``, and every value there is kept bit for bit."""
    return jnp.maximum(y, jnp.asarray(jnp.finfo(y.dtype).tiny, y.dtype))


def _ordinal(y: Array) -> Array:
    """A signed integer with the order of the float ``y`` that counts the representable normal
    numbers: ``0`` for zero (and subnormals, which XLA flushes to zero), ``±1`` for ``±tiny``,
    ``±2`` for the next ones, ... (consecutive ordinals are adjacent normal floats)."""
    itype = jnp.dtype(f"int{jnp.finfo(y.dtype).bits}")
    tiny_bits = jax.lax.bitcast_convert_type(jnp.asarray(jnp.finfo(y.dtype).tiny, y.dtype), itype)
    mag = jax.lax.bitcast_convert_type(jnp.abs(y), itype)
    o = jnp.where(mag >= tiny_bits, mag - tiny_bits + 1, 0)
    return jnp.where(y < 0, -o, o)


def _from_ordinal(o: Array, dtype) -> Array:
    itype = o.dtype
    tiny_bits = jax.lax.bitcast_convert_type(jnp.asarray(jnp.finfo(dtype).tiny, dtype), itype)
    mag = jnp.where(o == 0, 0, jnp.abs(o) + tiny_bits - 1)
    y = jax.lax.bitcast_convert_type(mag.astype(itype), dtype)
    return jnp.where(o < 0, -y, y)


def strictly_increasing(y: Array) -> Array:
    """``y`` (increasing along the last axis in exact arithmetic) made strictly increasing
    after rounding: each entry is at least the next representable number above the one before
    it, ``y'_i = max(y_i, nextafter(y'_{i-1}, inf))``. Computed exactly in the floats' integer
    order (a cumulative max of ``ord(y_i) - i``), so an already strictly increasing ``y`` is
    returned bit for bit; a tie moves by one ulp. The derivative is taken as the identity (the
    change is a few ulps)."""
    o = _ordinal(jax.lax.stop_gradient(y))
    i = jnp.arange(y.shape[-1], dtype=o.dtype)
    fixed = _from_ordinal(jax.lax.cummax(o - i, axis=y.ndim - 1) + i, y.dtype)
    return jax.lax.stop_gradient(fixed) + (y - jax.lax.stop_gradient(y))


def floor_tiny(y: Array) -> Array:
    """``max(y, tiny)``: keeps every positive normal number (so inverses stay exact on the set)
    and turns values <= 0 into the smallest positive one, whose raw value is finite."""
    return jnp.maximum(y, jnp.finfo(y.dtype).tiny)


def has_inverse(f) -> bool:
    """Whether the validated scalar map ``f`` (name, callable or pair) has an inverse: an entry
    built on it has a right inverse exactly then."""
    return resolve_scalar_map(f).inv is not None
