"""Power iteration for the largest singular value of a linear operator, given as a function and
its adjoint: :class:`~parametrax.catalog.norms.SpectralNorm` passes a matrix and its conjugate
transpose, :class:`~parametrax.catalog.conv_norm.ConvSpectralNorm` a convolution and its exact
transpose."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from parametrax._numerics.linalg import safe_norm

Array = jax.Array

__all__ = ["normalize", "power_iteration"]


def normalize(x: Array, eps: float) -> Array:
    """``x / max(||x||, eps)`` (torch's ``F.normalize``), with a finite gradient at 0."""
    return x / jnp.maximum(safe_norm(x), eps).astype(x.dtype)


def power_iteration(
    op: Callable[[Array], Array],
    op_h: Callable[[Array], Array],
    u: Array,
    v: Array,
    *,
    n: int,
    eps: float,
) -> tuple[Array, Array]:
    """``n`` iterations of ``u <- normalize(A v)``, ``v <- normalize(A^H u)``, with ``op`` the
    operator ``A`` (``v``'s space to ``u``'s) and ``op_h`` its adjoint ``A^H``; a
    ``lax.fori_loop``. No gradient is meant to flow: callers pass operators built from
    ``stop_gradient`` values, and jit the call (so eager calls compile once)."""

    def body(_, uv):
        u, v = uv
        u = normalize(op(v), eps)
        v = normalize(op_h(u), eps)
        return u, v

    return lax.fori_loop(0, n, body, (u, v))
