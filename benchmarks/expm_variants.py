"""An experiment, not library code: what a reverse-mode-only matrix exponential would save.

``jax.scipy.linalg.expm`` picks a Padé degree with ``lax.switch`` and then undoes the scaling
with a ``lax.scan`` of 16 ``lax.cond`` steps (so that it stays reverse-differentiable whatever
the number of squarings). Under ``jax.grad`` that scan stores 16 residual matrices and runs 16
conditional steps forward and 16 backward, even when 0-3 squarings are needed. This variant
computes the same numbers (the same scaling, the same Padé approximant, the same squarings, as
JAX's float32 path) but squares in a ``lax.fori_loop`` with a dynamic trip count and gives that
loop a ``custom_vjp`` (the adjoint recursion ``G <- G R_k^T + R_k^T G`` over the stored
squares). The price: no forward-mode derivative (``jax.jvp`` / ``jacfwd`` fail), which is why
``parametrax.MatrixExp`` does not use it. See benchmarks/results.md for the measured gap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

MAX_SQUARINGS = 16
_HI = lax.Precision.HIGHEST


def _dot(a, b):
    return jnp.matmul(a, b, precision=_HI)


def _pade3(a):
    b = (120.0, 60.0, 12.0, 1.0)
    i = jnp.eye(a.shape[-1], dtype=a.dtype)
    a2 = _dot(a, a)
    return _dot(a, b[3] * a2 + b[1] * i), b[2] * a2 + b[0] * i


def _pade5(a):
    b = (30240.0, 15120.0, 3360.0, 420.0, 30.0, 1.0)
    i = jnp.eye(a.shape[-1], dtype=a.dtype)
    a2 = _dot(a, a)
    a4 = _dot(a2, a2)
    return _dot(a, b[5] * a4 + b[3] * a2 + b[1] * i), b[4] * a4 + b[2] * a2 + b[0] * i


def _pade7(a):
    b = (17297280.0, 8648640.0, 1995840.0, 277200.0, 25200.0, 1512.0, 56.0, 1.0)
    i = jnp.eye(a.shape[-1], dtype=a.dtype)
    a2 = _dot(a, a)
    a4 = _dot(a2, a2)
    a6 = _dot(a4, a2)
    u = _dot(a, b[7] * a6 + b[5] * a4 + b[3] * a2 + b[1] * i)
    return u, b[6] * a6 + b[4] * a4 + b[2] * a2 + b[0] * i


@jax.custom_vjp
def _square(r, s):
    return lax.fori_loop(0, s, lambda _, r: _dot(r, r), r)


def _square_fwd(r, s):
    def body(k, carry):
        r, buf = carry
        return _dot(r, r), lax.dynamic_update_index_in_dim(buf, r, k, 0)

    buf = jnp.zeros((MAX_SQUARINGS,) + r.shape, r.dtype)
    out, buf = lax.fori_loop(0, s, body, (r, buf))
    return out, (buf, s)


def _square_bwd(res, g):
    buf, s = res

    def body(j, g):
        rk = lax.dynamic_index_in_dim(buf, s - 1 - j, 0, keepdims=False)
        return _dot(g, rk.T) + _dot(rk.T, g)

    return lax.fori_loop(0, s, body, g), None


_square.defvjp(_square_fwd, _square_bwd)


def expm_reverse_only(a):
    """``expm`` of one float32 square matrix, JAX's algorithm with a dynamic squaring loop."""
    if a.dtype != jnp.float32 or a.ndim != 2:
        raise TypeError("the experiment covers one float32 matrix")
    norm = lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(a), axis=0)))  # the L1 norm, as JAX
    s = jnp.maximum(0.0, jnp.floor(jnp.log2(norm / 3.925724783138660)))
    a = a / (2.0 ** s).astype(a.dtype)
    idx = jnp.digitize(norm, jnp.array([4.258730016922831e-001, 1.880152677804762e000]))
    u, v = lax.switch(idx, [_pade3, _pade5, _pade7], a)
    r = jnp.linalg.solve(v - u, v + u)
    r = _square(r, jnp.minimum(s, MAX_SQUARINGS).astype(jnp.int32))
    return jnp.where(s > MAX_SQUARINGS, jnp.nan, r)
