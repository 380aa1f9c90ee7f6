"""Random points of the orthogonal group and of Stiefel manifolds: Haar and torus sampling; and
the one checked call of a user's initializer that the ``sample`` methods draw from."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from parametrax._errors import ParametrizationError
from parametrax._numerics.checks import wide_dtype
from parametrax._numerics.linalg import sign_or_one

Array = jax.Array

__all__ = ["haar", "haar_special", "torus", "draw_init"]


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def haar(key: Array, batch: tuple, n: int, k: int, dtype) -> Array:
    """Haar-uniform ``(..., n, k)`` (n >= k) matrices with orthonormal columns: the Q factor of
    a Gaussian matrix with the signs fixed so that ``diag(R) > 0`` (Mezzadri 2007). bfloat16 /
    float16 are drawn and factored in float32, then cast."""
    wide = wide_dtype(dtype)
    g = jax.random.normal(key, tuple(batch) + (n, k), wide)
    q, r = jnp.linalg.qr(g)
    d = sign_or_one(jnp.diagonal(r, axis1=-2, axis2=-1))
    return (q * d[..., None, :]).astype(dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def haar_special(key: Array, batch: tuple, n: int, dtype) -> Array:
    """Haar-uniform SO(n): a Haar O(n) sample with its first column negated when det < 0."""
    wide = wide_dtype(dtype)
    q = haar(key, batch, n, n, wide)
    neg = jnp.linalg.det(q) < 0
    sign = jnp.where(neg, -1.0, 1.0).astype(wide)
    first = q[..., :, :1] * sign[..., None, None]
    return jnp.concatenate([first, q[..., :, 1:]], axis=-1).astype(dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def torus(key: Array, batch: tuple, n: int, dtype, k: int | None = None) -> Array:
    """The "torus" initialisation for RNNs (Henaff et al. 2016): block-diagonal 2x2 rotations
    by angles ``θ ~ U(-π, π)`` (a 1 in the corner when ``n`` is odd); this is ``expm`` of the
    block-diagonal skew matrix with blocks ``[[0, -θ], [θ, 0]]``, whatever the entry's ``triv``.

    With ``k`` (``<= n``) only the first ``k`` columns, ``(*batch, n, k)``, built directly in
    O(n k) (the same draw: equal to the first ``k`` columns of the ``n x n`` result).

    It equals geotorch's ``torus_init_`` / ``sample("torus")`` with ``triv="expm"`` only.
    geotorch draws ``b ~ U(-π, π)`` and pushes the skew matrix through the manifold's own
    ``triv``: with ``triv="cayley"`` (``(I - A/2)⁻¹(I + A/2)``) its rotation angles are
    ``2 atan(b/2)``, in ``(-2.01, 2.01)`` and not uniform; here they stay uniform in
    ``(-π, π)``."""
    k = n if k is None else k
    m = n // 2
    theta = jax.random.uniform(key, tuple(batch) + (m,), dtype, -jnp.pi, jnp.pi)
    c, s = jnp.cos(theta), jnp.sin(theta)
    diag = jnp.ones(tuple(batch) + (n,), dtype)
    diag = diag.at[..., 0 : 2 * m : 2].set(c).at[..., 1 : 2 * m : 2].set(c)
    q = diag[..., :, None] * jnp.eye(n, k, dtype=dtype)
    if m:
        sub = jnp.zeros(tuple(batch) + (n - 1,), dtype).at[..., 0::2].set(s)
        low = min(n - 1, k)  # q[j + 1, j] = sub[j] for the columns j < k
        cols = jnp.arange(low)
        q = q.at[..., cols + 1, cols].set(sub[..., :low])
        up = min(n - 1, k - 1)  # q[j, j + 1] = -sub[j] for the columns j + 1 < k
        cols = jnp.arange(up)
        q = q.at[..., cols, cols + 1].set(-sub[..., :up])
    return q


def draw_init(p, init: Callable, key: Array, shape: tuple, dtype) -> Array:
    """``init(key, shape, dtype)`` for ``p.sample(key, shape, dtype, init=...)``, checked: a
    callable (a JAX initializer) returning an array of ``shape``; otherwise a
    :class:`~parametrax.ParametrizationError` naming ``p``'s class."""
    if not callable(init):
        raise ParametrizationError(
            f"`{type(p).__name__}.sample`: `init` must be a JAX initializer "
            f"`init(key, shape, dtype)` (e.g. jax.nn.initializers.glorot_normal()); got {init!r}."
        )
    x = jnp.asarray(init(key, shape, dtype))
    if tuple(x.shape) != tuple(shape):
        raise ParametrizationError(
            f"`{type(p).__name__}.sample`: `init(key, {shape}, dtype)` returned an array of shape "
            f"{tuple(x.shape)}; expected {shape}."
        )
    return x
