"""Small shared test utilities (tolerances are named per dtype, never library defaults)."""

import jax
import jax.numpy as jnp
import numpy as np

ATOL = {jnp.float32: 1e-5, jnp.float64: 1e-12}
F32_ATOL = 1e-5
F32_RTOL = 1e-4


def orthogonality_error(q):
    q = np.asarray(q)
    k = q.shape[-1]
    return float(np.max(np.abs(np.swapaxes(q, -1, -2).conj() @ q - np.eye(k))))


def symmetry_error(a):
    a = np.asarray(a)
    return float(np.max(np.abs(a - np.swapaxes(a, -1, -2))))


def skew_error(a):
    a = np.asarray(a)
    return float(np.max(np.abs(a + np.swapaxes(a, -1, -2))))


def normal(seed, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)
