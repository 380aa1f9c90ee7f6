r"""Tall ``n x k`` frames in O(n k²) time and O(n k) memory: the maps of the orthogonal family
without ever building an ``n x n`` array (issue 12).

Every trivialized map here is ``Q = B f(A) E`` with ``E = I[:, :k]`` (the first ``k`` columns),
``B`` an ``n x n`` orthogonal base point and ``A`` the ``n x n`` skew matrix

    A = [[S, -C^H],
         [C,  0  ]]          S: k x k skew (Hermitian),   C: (n - k) x k,

read from the raw columns, and ``f`` the matrix exponential or the Cayley map. Two facts make
the whole map O(n k²):

1. **The tangent step on 2k x 2k** (:func:`skew_map_columns`). With ``U = [E, [0; C] / rho]``
   (``n x 2k``, any ``rho > 0``), ``A U = U M`` for the ``2k x 2k`` matrix

       M = [[S,       -C^H C / rho],
            [rho I,    0          ]],

   because ``A E = [S; C] = E S + ([0; C] / rho) rho`` and ``A [0; C] = [-C^H C; 0]``. Hence
   ``A^j U = U M^j`` for every ``j``, ``f(A) U = U f(M)`` for every power series or rational
   ``f`` (the exponential; the Cayley map, whose ``I - M/2`` is invertible because every
   eigenvalue of ``M`` is imaginary: ``(lambda^2 - lambda S + C^H C) y = 0`` with ``y^H S y``
   imaginary and ``y^H C^H C y >= 0`` forces ``lambda`` onto the imaginary axis), and

       f(A) E = U f(M) [I; 0] = [F11; C F21 / rho],   F = f(M).

   This holds for **every** ``C``, rank-deficient or zero included (no QR of ``C``, whose
   derivative is singular at ``C = 0``, which is exactly where a trivialization starts), and
   JAX differentiates it as it stands: the result is the exact map and its exact gradient, not
   a retraction. It is the Stiefel geodesic of Edelman, Arias & Smith (1998, §2.4.2) and the
   Sherman–Morrison–Woodbury form of the Cayley transform (Wen & Yin 2013), written on the
   non-orthonormal basis ``[E, [0; C]]`` so that no factorization of ``C`` is differentiated.
   ``rho`` (the largest column norm of ``C``, without gradient) balances the two blocks; it
   does not change the value. When ``n <= 2k`` the dense ``n x n`` matrix is the smaller one and
   is used instead (the same function, the cheaper of two exact forms).

2. **The base as a frame** (:func:`apply_frame`). A base point is kept as its first ``k``
   columns ``Y`` (``n x k``, orthonormal), completed to ``B = [Y, Y_perp]`` by the Householder
   QR of ``Y``: ``Y = H_1 ... H_k [R; 0]`` and ``Y_perp = (H_1 ... H_k)[:, k:]``, exactly the
   columns ``jnp.linalg.qr(Y, mode="complete")`` appends. Then
   ``B Z = Y Z_1 + H_1 ... H_k [0; Z_2]`` costs two ``n x k x k`` products in compact WY form
   (``H_1 ... H_k = I - V T V^H``). At ``Z = E`` the second term is exactly zero and ``Y Z_1 =
   Y``: a frame is reproduced bit for bit.

Both are batched over leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from parametrax._numerics.linalg import mH, sign_or_one

Array = jax.Array

__all__ = ["skew_blocks", "skew_dense", "skew_map_columns", "apply_frame", "eye_frame"]

_HIGHEST = lax.Precision.HIGHEST


def _mm(a: Array, b: Array) -> Array:
    return jnp.matmul(a, b, precision=_HIGHEST)


def eye_frame(batch: tuple, n: int, k: int, dtype) -> Array:
    """The canonical frame ``I[:, :k]`` of shape ``(*batch, n, k)``."""
    return jnp.broadcast_to(jnp.eye(n, k, dtype=dtype), tuple(batch) + (n, k))


def skew_blocks(x: Array, *, diagonal: bool = False, horizontal: bool = False):
    """``(S, C)`` of the skew matrix read from the tall raw columns ``x`` (``(..., n, k)``):
    ``S = L - L^H`` with ``L`` the lower triangle of ``x``'s top ``k x k`` block (the strict one
    unless ``diagonal``: torch's ``orthogonal`` keeps the diagonal, whose real part cancels) and
    ``C = x[..., k:, :]``. ``horizontal`` (the Grassmannian) drops ``S``."""
    k = x.shape[-1]
    low = jnp.tril(x[..., :k, :], 0 if diagonal else -1)
    s = jnp.zeros_like(low) if horizontal else low - mH(low)
    return s, x[..., k:, :]


def skew_dense(s: Array, c: Array) -> Array:
    """The ``n x n`` matrix ``[[S, -C^H], [C, 0]]`` (for the dense form and for tests)."""
    m = c.shape[-2]
    top = jnp.concatenate([s, -mH(c)], axis=-1)
    bottom = jnp.concatenate([c, jnp.zeros(c.shape[:-1] + (m,), c.dtype)], axis=-1)
    return jnp.concatenate([top, bottom], axis=-2)


def skew_map_columns(s: Array, c: Array, f) -> Array:
    """``f(A)[..., :, :k]`` for ``A = [[S, -C^H], [C, 0]]`` (see the module docstring), with
    ``f`` a power series or rational function of a square matrix (:func:`expm`,
    :func:`cayley_half`), batched natively. O((n + k) k²) through the ``2k x 2k`` form when
    ``n > 2k``; the dense ``n x n`` form otherwise (it is then the smaller)."""
    k, m = s.shape[-1], c.shape[-2]
    if m <= k:
        return f(skew_dense(s, c))[..., :, :k]
    gram = _mm(mH(c), c)  # C^H C, k x k
    rb = _balance(c)  # U = [E, [0; C] R_b^{-1}]: A U = U M for any invertible R_b
    tri = lax.linalg.triangular_solve
    small = jnp.concatenate(
        [
            jnp.concatenate([s, -tri(rb, gram, left_side=False, lower=False)], axis=-1),
            jnp.concatenate([rb, jnp.zeros_like(s)], axis=-1),
        ],
        axis=-2,
    )
    fm = f(small)
    low = tri(rb, fm[..., k:, :k], left_side=True, lower=False)  # R_b^{-1} F21
    return jnp.concatenate([fm[..., :k, :k], _mm(c, low)], axis=-2)


def _balance(c: Array) -> Array:
    """An invertible upper triangular ``R_b`` (no gradient) close to the R factor of ``C``: with
    ``U = [E, [0; C] R_b^{-1}]`` nearly orthonormal, ``M`` is nearly the skew matrix
    ``[[S, -R^H], [R, 0]]`` of Edelman, Arias & Smith, so the small map is as well conditioned
    as the dense one. Diagonal entries below ``1e-3`` of the largest (a rank-deficient ``C``,
    e.g. ``C = 0`` where a trivialization starts) are raised to it (``R_b = I`` at ``C = 0``);
    any invertible ``R_b`` gives the same value and the same derivative."""
    r = jnp.linalg.qr(lax.stop_gradient(c), mode="r")
    d = jnp.diagonal(r, axis1=-2, axis2=-1)
    top = jnp.max(jnp.abs(d), axis=-1, keepdims=True)
    floor = jnp.where(top > 0, 1e-3 * top, 1.0)
    mag = jnp.maximum(jnp.abs(d), floor)
    new = sign_or_one(d) * mag
    k = d.shape[-1]
    return r + (new - d)[..., :, None] * jnp.eye(k, dtype=r.dtype)


@jax.jit
def _reflectors(y: Array) -> tuple[Array, Array, Array, Array]:
    """The compact form ``H_1 ... H_k = I - V T V^H`` of the Householder QR of the frame ``y``
    (orthonormal columns), rebuilt from ``y`` itself (Ballard, Demmel, Grigori, Jacquelin,
    Knight & Nguyen 2015, "Reconstructing Householder vectors from tall-skinny QR"): the LU
    factorization ``y - [Sigma; 0] = V U`` without pivoting, ``Sigma`` the signs chosen on
    the fly as ``-sign(Re pivot)`` (so every pivot has modulus >= 1: a stable elimination;
    and LAPACK's ``geqrf`` choice, a real ``R`` diagonal, so the completion is LAPACK's), and ``T = -U Sigma V_1^{-H}``.
    Only the ``k x k`` top block is eliminated (a ``k``-step loop on ``k x k``); the rest of
    ``V`` is one triangular solve. Returns ``(V, U, Sigma, V_1)``."""
    k = y.shape[-1]
    idx = jnp.arange(k)

    def body(j, carry):
        a, sig = carry
        piv = a[..., j, j]
        s = -sign_or_one(jnp.real(piv)).astype(piv.dtype)  # real, as LAPACK's geqrf
        piv = piv - s
        a = a.at[..., j, j].set(piv)
        below = idx > j
        col = jnp.where(below, a[..., :, j] / piv[..., None], 0)
        row = jnp.where(below, a[..., j, :], 0)
        a = a - col[..., :, None] * row[..., None, :]
        a = jnp.where(below[:, None] & (idx == j)[None, :], col[..., :, None], a)
        return a, sig.at[..., j].set(s)

    sig0 = jnp.zeros(y.shape[:-2] + (k,), y.dtype)
    a, sig = lax.fori_loop(0, k, body, (y[..., :k, :], sig0))
    u = jnp.triu(a)
    v1 = jnp.tril(a, -1) + jnp.eye(k, dtype=y.dtype)
    v2 = lax.linalg.triangular_solve(u, y[..., k:, :], left_side=False, lower=False)
    return jnp.concatenate([v1, v2], axis=-2), u, sig, v1


def apply_frame(frame: Array, z: Array) -> Array:
    """``B @ z`` for the base ``B = [Y, Y_perp]`` kept as its frame ``Y = frame`` (``(..., n,
    k)``, orthonormal columns) and ``z`` of shape ``(..., n, k)``: ``Y z_1 + H_1 ... H_k [0;
    z_2]`` (module docstring). ``Y_perp`` is the Householder completion of ``Y`` (the columns
    ``jnp.linalg.qr(Y, mode="complete")`` appends), computed without gradient: the result is
    differentiable in ``z`` and, through ``Y z_1``, in ``Y``. An ``(..., n, n)`` ``frame`` is a
    whole base (the square case, or a base stored in full): ``frame @ z``."""
    n, k = frame.shape[-2:]
    if n == k:
        return _mm(frame, z)
    top = _mm(frame, z[..., :k, :])
    v, u, sig, v1 = _reflectors(lax.stop_gradient(frame))
    w = _mm(mH(v[..., k:, :]), z[..., k:, :])  # V^H [0; z_2]
    w = lax.linalg.triangular_solve(  # V_1^{-H} w
        v1, w, left_side=True, lower=True, transpose_a=True, conjugate_a=True,
        unit_diagonal=True,
    )
    w = -_mm(u, sig[..., :, None] * w)  # T V^H [0; z_2],  T = -U Sigma V_1^{-H}
    low = jnp.concatenate([jnp.zeros_like(z[..., :k, :]), z[..., k:, :]], axis=-2)
    return top + low - _mm(v, w)
