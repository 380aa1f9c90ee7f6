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
    return 2.0 * jax.nn.sigmoid(x) - 1.0


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


SCALAR_MAPS: dict[str, ScalarMap] = {
    "softplus": ScalarMap("softplus", jax.nn.softplus, inv_softplus, 0.0, float("inf"), False),
    "exp": ScalarMap("exp", jnp.exp, jnp.log, 0.0, float("inf"), False),
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


def floor_tiny(y: Array) -> Array:
    """``max(y, tiny)``: keeps every positive normal number (so inverses stay exact on the set)
    and turns values <= 0 into the smallest positive one, whose raw value is finite."""
    return jnp.maximum(y, jnp.finfo(y.dtype).tiny)


def has_inverse(f) -> bool:
    """Whether the validated scalar map ``f`` (name, callable or pair) has an inverse: an entry
    built on it has a right inverse exactly then."""
    return resolve_scalar_map(f).inv is not None
