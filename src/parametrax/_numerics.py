"""Numerical helpers shared by the catalog: shape checks, triangles, safe norms, solves."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from parametrax._core import describe
from parametrax._errors import ShapeError

Array = jax.Array


def require_inexact(p, x: Array) -> None:
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise ShapeError(
            f"{describe(p)} needs a floating-point or complex array; got dtype "
            f"{jnp.dtype(x.dtype).name} (shape {tuple(x.shape)}). Integer variables cannot be "
            "parametrized by a continuous map."
        )


def require_matrix(p, x: Array) -> None:
    require_inexact(p, x)
    require_matrix_shape(p, x)


def require_matrix_shape(p, x: Array) -> None:
    """At least two axes: the matrix axes (last two) and any batch axes before them."""
    if x.ndim < 2:
        raise ShapeError(
            f"{describe(p)} acts on matrices (the last two axes, leading axes are batch axes); "
            f"got an array of shape {tuple(x.shape)} with {x.ndim} dimension(s)."
        )


def require_square(p, x: Array) -> None:
    require_matrix(p, x)
    if x.shape[-1] != x.shape[-2]:
        raise ShapeError(
            f"{describe(p)} acts on square matrices (the last two axes); got shape "
            f"{tuple(x.shape)}, whose last two axes are {x.shape[-2]}x{x.shape[-1]}. For a "
            "non-square kernel use `Orthogonal` (tall or wide) or reshape the variable."
        )


def mT(x: Array) -> Array:
    """Transpose of the last two axes (batch-safe, never ``.T``)."""
    return jnp.swapaxes(x, -1, -2)


def mH(x: Array) -> Array:
    """Conjugate transpose of the last two axes."""
    return jnp.conj(mT(x))


def eye_like(x: Array) -> Array:
    n = x.shape[-1]
    return jnp.broadcast_to(jnp.eye(n, dtype=x.dtype), x.shape)


def solve(a: Array, b: Array) -> Array:
    """``a^{-1} b`` for batched square ``a`` and matrix ``b`` (a solve, never an inverse)."""
    return jnp.linalg.solve(a, b)


def safe_norm(x: Array, axis=None, keepdims: bool = False) -> Array:
    """The L2 norm with gradient 0 (not NaN) at x == 0."""
    sq = jnp.sum(jnp.real(x * jnp.conj(x)), axis=axis, keepdims=keepdims)
    nonzero = sq > 0
    safe_sq = jnp.where(nonzero, sq, jnp.ones_like(sq))
    return jnp.where(nonzero, jnp.sqrt(safe_sq), jnp.zeros_like(sq))
