"""Input checks shared by the catalog: one dtype rule, one set of shape checks, one axis rule.

The dtype rule: parametrizations accept inexact arrays (real floating point; complex where the
entry says so). ``bfloat16`` and ``float16`` are accepted and the maths runs in float32
(:func:`widen`, :func:`widened`): XLA has no LU, QR, SVD or ``expm`` for them on CPU, and their
8- / 11-bit mantissas would lose the constraint anyway. Results are cast back to the input's
dtype.

The axis rule: an ``axis`` field is an int (or, where the entry allows it, a non-empty tuple of
ints, or None); a list becomes a tuple so equal configurations hash equal. An axis out of range
for the array, or repeated, raises :class:`~parametrax._errors.AxisError` (a ``ShapeError`` and
an ``IndexError``) naming the valid range.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from parametrax._errors import (
    AxisError,
    ParametrizationError,
    ParametrizationTypeError,
    ShapeError,
    describe,
)

Array = jax.Array
#: What the shape checks read: an array or an abstract value (``jax.ShapeDtypeStruct``).
Shaped = jax.Array | jax.ShapeDtypeStruct

__all__ = [
    "wide_dtype",
    "widen",
    "widened",
    "require_inexact",
    "require_matrix",
    "require_matrix_shape",
    "require_square",
    "require_rank",
    "require_shape",
    "check_positive_int",
    "check_axis_field",
    "normalize_axes",
    "real_axis",
    "default_atol",
    "on_manifold_tol",
]


# ------------------------------------------------------------------------------------------------
# dtypes
# ------------------------------------------------------------------------------------------------
def wide_dtype(dtype, at_least=jnp.float32):
    """``jnp.promote_types(dtype, at_least)`` by the standard rules, whatever
    ``jax_numpy_dtype_promotion`` is set to: the dtype is chosen here and every cast to it is
    explicit, so the library also runs under strict promotion (which refuses ``promote_types`` of
    two different dtypes)."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.promote_types(dtype, at_least)


def widen(x: Array) -> Array:
    """``x`` in at least float32 (bfloat16 / float16 become float32; others are unchanged)."""
    return x.astype(wide_dtype(x.dtype))


def widened(fn):
    """``fn`` computed on :func:`widen` of its array arguments, its array results cast back to the
    first argument's dtype (``None`` arguments pass through)."""

    @functools.wraps(fn)
    def wrapper(x, *rest, **kwargs):
        dtype = x.dtype
        if jnp.dtype(dtype) == wide_dtype(dtype):
            return fn(x, *rest, **kwargs)
        rest = tuple(None if r is None else widen(r) for r in rest)
        out = fn(widen(x), *rest, **kwargs)
        return jax.tree.map(lambda y: y.astype(dtype), out)

    return wrapper


def require_inexact(p, x: Shaped, *, real: bool = False) -> None:
    """A floating-point array (``real=False``: complex too)."""
    ok = jnp.issubdtype(x.dtype, jnp.floating if real else jnp.inexact)
    if not ok:
        want = "a real floating-point array" if real else "a floating-point or complex array"
        raise ShapeError(
            f"{describe(p)} needs {want}; got dtype {jnp.dtype(x.dtype).name} (shape "
            f"{tuple(x.shape)}). Integer variables cannot be parametrized by a continuous map."
        )


def require_matrix_shape(p, x: Shaped) -> None:
    """At least two axes: the matrix axes (last two) and any batch axes before them."""
    if x.ndim < 2:
        raise ShapeError(
            f"{describe(p)} acts on matrices (the last two axes, leading axes are batch axes); "
            f"got an array of shape {tuple(x.shape)} with {x.ndim} dimension(s)."
        )


def require_matrix(p, x: Shaped, *, real: bool = False) -> None:
    require_inexact(p, x, real=real)
    require_matrix_shape(p, x)


def require_square(p, x: Shaped, hint: str = "", *, real: bool = False) -> None:
    """Square matrices on the last two axes; ``hint`` (a sentence) is appended to the error."""
    require_matrix(p, x, real=real)
    if x.shape[-1] != x.shape[-2]:
        raise ShapeError(
            f"{describe(p)} acts on square matrices (the last two axes); got shape "
            f"{tuple(x.shape)}, whose last two axes are {x.shape[-2]}x{x.shape[-1]}.{hint}"
        )


def require_rank(p, x: Shaped, rank: int, *, square: bool = False, real: bool = False) -> None:
    if square:
        require_square(p, x, real=real)
    else:
        require_matrix(p, x, real=real)
    limit = min(x.shape[-2:])
    if rank > limit:
        raise ShapeError(
            f"{describe(p)}: `rank`={rank} is larger than the matrices it acts on allow: shape "
            f"{tuple(x.shape)} has {x.shape[-2]}x{x.shape[-1]} matrices, so the rank is at most "
            f"{limit}."
        )


def require_shape(p, got: tuple, want: tuple, what: str) -> None:
    if tuple(got) != tuple(want):
        raise ShapeError(
            f"{describe(p)}: {what} has shape {tuple(got)}; expected {tuple(want)}. Were the "
            "variables made by `init_variables` for a value of this shape?"
        )


def check_positive_int(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParametrizationError(f"`{owner}`: `{name}` must be a positive int; got {value!r}.")


# ------------------------------------------------------------------------------------------------
# axes
# ------------------------------------------------------------------------------------------------
def _is_int(a) -> bool:
    return isinstance(a, int) and not isinstance(a, bool)


def check_axis_field(p, *, allow_tuple: bool = True, allow_none: bool = False) -> None:
    """Validates ``p.axis`` at construction (call from ``__post_init__``); a list becomes a tuple
    (so that equal configurations hash equal)."""
    axis = p.axis
    if isinstance(axis, list) and allow_tuple:
        axis = tuple(axis)
        object.__setattr__(p, "axis", axis)
    ok = (
        (axis is None and allow_none)
        or _is_int(axis)
        or (allow_tuple and isinstance(axis, tuple) and len(axis) > 0 and all(map(_is_int, axis)))
    )
    if not ok:
        what = "an int"
        if allow_tuple:
            what += ", a non-empty tuple of ints"
        if allow_none:
            what += " or None (the whole array)"
        raise ParametrizationTypeError(f"{describe(p)}: `axis` must be {what}; got {axis!r}.")


def real_axis(p, x) -> int:
    """``p.axis`` (one int) as a non-negative axis of ``x``, which must be real floating point;
    AxisError if out of range (the vector entries: ``Simplex``, ``Ordered``)."""
    require_inexact(p, x, real=True)
    return normalize_axes(p, p.axis, x.shape)[0]


def normalize_axes(p, axis, shape: tuple) -> tuple[int, ...]:
    """``axis`` (an int, a tuple of ints, or None for every axis) as non-negative axes of an
    array of shape ``shape``, in the order given. Raises :class:`AxisError` when an axis is out
    of range or repeated."""
    shape = tuple(shape)
    ndim = len(shape)
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if _is_int(axis) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            lo, hi = -max(ndim, 1), max(ndim, 1) - 1
            raise AxisError(
                f"{describe(p)}: `axis`={axis!r} is out of range for an array of shape {shape} "
                f"({ndim} dimension(s)): each axis must be in range of [{lo}, {hi}] but got {a}."
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise AxisError(
            f"{describe(p)}: `axis`={axis!r} has a repeated axis for an array of shape {shape}."
        )
    return tuple(out)


# ------------------------------------------------------------------------------------------------
# tolerances
# ------------------------------------------------------------------------------------------------
_DEFAULT_ATOL = {16: 1e-2, 32: 1e-4, 64: 1e-9}  # by the bits of the real component


def default_atol(dtype) -> float:
    """The one tolerance table per dtype (float16/bfloat16 ``1e-2``, float32 ``1e-4``, float64
    ``1e-9``; complex dtypes by their real component): ``in_manifold``'s default and the
    contract kit's; loose enough for the rounding of
    an ``n x n`` product, measured relative to ``max(1, scale)`` where a check has a scale."""
    if not jnp.issubdtype(dtype, jnp.inexact):
        return 1e-4
    return _DEFAULT_ATOL.get(jnp.finfo(dtype).bits, 1e-4)


def on_manifold_tol(dtype) -> float:
    """The tolerance under which a value of ``dtype`` counts as already on the manifold when
    assigned (then it is kept exactly instead of projected), for an error such as
    ``max |QᵀQ - I|`` computed in the widened dtype (:func:`widen` first).

    float32 / float64 (and complex): ``100 eps``. bfloat16 / float16: ``2 eps`` of the half
    dtype. Rounding an exactly orthonormal ``Q`` to it moves every entry of ``QᵀQ`` by at most
    ``2u + u² < 2 eps`` (``u = eps / 2``, Cauchy–Schwarz on the unit columns), so the roundings
    of points of the manifold are kept and everything farther is projected. (``100 eps`` of
    bfloat16 would be 0.78: a bfloat16 Gaussian matrix would count as orthonormal.)"""
    finfo = jnp.finfo(dtype)
    return float((2 if finfo.bits <= 16 else 100) * finfo.eps)
