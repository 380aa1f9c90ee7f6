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
   The basis is balanced by an upper triangular ``R_b`` (``[0; C] R_b^{-1}``; the Cholesky
   factor of ``C^H C``, without gradient): any invertible ``R_b`` gives the same value, this one
   keeps the small map as well conditioned as the dense one. When ``n <= 2k`` the dense
   ``n x n`` matrix is the smaller one and
   is used instead (the same function, the cheaper of two exact forms).

2. **The base as a frame** (:func:`apply_frame`). A base point is kept as its first ``k``
   columns ``Y`` (``n x k``, orthonormal), completed to ``B = [Y, Y_perp]`` by the Householder
   QR of ``Y``: ``Y = H_1 ... H_k [R; 0]`` and ``Y_perp = (H_1 ... H_k)[:, k:]``, exactly the
   columns ``jnp.linalg.qr(Y, mode="complete")`` appends. With the compact WY form of that QR
   rebuilt from ``Y``'s top ``k x k`` block alone (an unpivoted LU, ``k`` steps on ``k x k``),
   ``B Z = Y m + [Sigma p; Z_2]`` with ``k x k`` matrices ``m`` and ``p``: two ``n x k x k``
   products (``Y_2^H Z_2`` and ``Y m``) and no ``n x k`` reflector matrix. At ``Z = E``,
   ``m = I`` and ``p = 0``: a frame is reproduced bit for bit.

Cost of one training step (forward and backward) in ``n x k x k`` products: the base 4, the
``2k x 2k`` maps 5 (:func:`gram` takes one product in each direction), the Householder map 5;
the ``k x k`` and ``2k x 2k`` work does not grow with ``n``.

Both are batched over leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from parametrax._numerics.linalg import mH, sign_or_one

Array = jax.Array

__all__ = ["skew_blocks", "skew_dense", "skew_map_columns", "apply_frame", "eye_frame", "gram"]

_HIGHEST = lax.Precision.HIGHEST


def _mm(a: Array, b: Array) -> Array:
    return jnp.matmul(a, b, precision=_HIGHEST)


@jax.custom_jvp
def gram(c: Array) -> Array:
    """``C^H C`` (``(..., k, k)``) of a tall ``(..., n, k)`` ``C``, with the derivative written
    as ``dG = S + S^H``, ``S = C^H dC``: one ``n x k x k`` product in the forward derivative
    and one (``C (G_bar + G_bar^H)``) in its transpose, where JAX's rule for the two-operand
    product forms two (``dC^H C`` and ``C^H dC``; ``C G_bar^H`` and ``C G_bar``)."""
    return _mm(mH(c), c)


@gram.defjvp
def _gram_jvp(primals, tangents):
    (c,), (dc,) = primals, tangents
    s = _mm(mH(c), dc)
    return gram(c), s + mH(s)


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
    g = gram(c)  # C^H C, k x k
    rb = _balance(g)  # U = [E, [0; C] R_b^{-1}]: A U = U M for any invertible R_b
    tri = lax.linalg.triangular_solve
    small = jnp.concatenate(
        [
            jnp.concatenate([s, -tri(rb, g, left_side=False, lower=False)], axis=-1),
            jnp.concatenate([rb, jnp.zeros_like(s)], axis=-1),
        ],
        axis=-2,
    )
    fm = f(small)
    low = tri(rb, fm[..., k:, :k], left_side=True, lower=False)  # R_b^{-1} F21
    return jnp.concatenate([fm[..., :k, :k], _mm(c, low)], axis=-2)


def _balance(gram: Array) -> Array:
    """An invertible upper triangular ``R_b`` (no gradient) close to the R factor of ``C``, from
    its Gram matrix ``C^H C`` (already formed; a QR of the ``n x k`` ``C`` would cost several
    ``n x k x k`` products more): with ``U = [E, [0; C] R_b^{-1}]`` nearly orthonormal, ``M`` is
    nearly the skew matrix ``[[S, -R^H], [R, 0]]`` of Edelman, Arias & Smith, so the small map is
    as well conditioned as the dense one. ``R_b`` is the Cholesky factor of ``C^H C + delta I``,
    ``delta = (1e-6 + 10 k eps)`` times the largest diagonal entry: singular values of ``C``
    below ``~1e-3`` (float64; ``~8e-3`` in float32 at ``k = 50``) of the largest (a
    rank-deficient ``C``) are raised to that, and ``C = 0`` (where a trivialization starts)
    gives ``R_b = I``. Any invertible ``R_b`` gives the same value and the same derivative."""
    gram = lax.stop_gradient(gram)
    k = gram.shape[-1]
    eye = jnp.eye(k, dtype=gram.dtype)
    diag = jnp.real(jnp.diagonal(gram, axis1=-2, axis2=-1))
    top = jnp.max(diag, axis=-1)[..., None, None]
    eps = float(jnp.finfo(diag.dtype).eps)
    shift = ((1e-6 + 10 * k * eps) * top).astype(gram.dtype)  # real; cast for complex gram
    reg = jnp.where(top > 0, gram + shift * eye, eye)
    r = mH(jnp.linalg.cholesky(reg))
    ok = jnp.all(jnp.isfinite(r), axis=(-2, -1), keepdims=True)
    return jnp.where(ok, r, eye)


@jax.jit
def _top_lu(y1: Array) -> tuple[Array, Array]:
    """The ``k x k`` data of the compact form ``H_1 ... H_k = I - V T V^H`` of the Householder
    QR of a frame whose top block is ``y1`` (Ballard, Demmel, Grigori, Jacquelin, Knight &
    Nguyen 2015, "Reconstructing Householder vectors from tall-skinny QR"): the LU
    factorization ``y1 - Sigma = V_1 U`` without pivoting, the signs ``Sigma`` chosen on the fly
    as ``-sign(Re pivot)`` (so every pivot has modulus >= 1: a stable elimination; and LAPACK's
    ``geqrf`` choice, a real ``R`` diagonal, so the completion is LAPACK's). A ``k``-step loop
    on ``k x k`` only: its cost does not grow with ``n``. Returns the packed factors (``U`` on
    and above the diagonal, ``V_1``'s strict lower part below; ``V_1`` has a unit diagonal) and
    the diagonal of ``Sigma``."""
    k = y1.shape[-1]
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

    sig0 = jnp.zeros(y1.shape[:-2] + (k,), y1.dtype)
    return lax.fori_loop(0, k, body, (y1, sig0))


def apply_frame(frame: Array, z: Array) -> Array:
    r"""``B @ z`` for the base ``B = [Y, Y_perp]`` kept as its frame ``Y = frame`` (``(..., n,
    k)``, orthonormal columns) and ``z`` of shape ``(..., n, k)``. ``Y_perp`` is the
    Householder completion of ``Y`` (the columns ``jnp.linalg.qr(Y, mode="complete")``
    appends). An ``(..., n, n)`` ``frame`` is a whole base (the square case, or a base stored
    in full): ``frame @ z``.

    With ``H_1 ... H_k = I - V T V^H``, ``Y - [Sigma; 0] = V U`` (:func:`_top_lu`), ``V_2 = Y_2
    U^{-1}`` and ``T = -U Sigma V_1^{-H}`` (Ballard et al.), the product
    ``B z = Y z_1 + (I - V T V^H) [0; z_2]`` simplifies (substitute ``V_2`` and ``T``; ``V_1 U +
    Sigma = Y_1``) to

        B z = Y m + [Sigma p; z_2],   p = -Sigma (Y_1 - Sigma)^{-H} Y_2^H z_2,   m = z_1 - p:

    two ``n x k x k`` products (``Y_2^H z_2`` and ``Y m``), ``k x k`` solves with the LU
    factors, and no ``n x k`` reflector matrix: the completion's whole cost beyond the two
    products is the ``k``-step elimination on the ``k x k`` top block. At ``z = E`` (``z_1 = I``,
    ``z_2 = 0``) ``p = 0`` and the result is ``Y`` bit for bit. The elimination is computed
    without gradient; the result is differentiable in ``z`` and in ``Y`` (through the two
    products; the ``k x k`` LU factors are held constant)."""
    n, k = frame.shape[-2:]
    if n == k:
        return _mm(frame, z)
    lu, sig = _top_lu(lax.stop_gradient(frame[..., :k, :]))
    z1, z2 = z[..., :k, :], z[..., k:, :]
    g = _mm(mH(frame[..., k:, :]), z2)  # Y_2^H z_2
    tri = lax.linalg.triangular_solve
    g = tri(lu, g, left_side=True, lower=False, transpose_a=True, conjugate_a=True)  # U^{-H}
    g = tri(
        lu, g, left_side=True, lower=True, transpose_a=True, conjugate_a=True, unit_diagonal=True
    )  # V_1^{-H}: (Y_1 - Sigma)^{-H} = V_1^{-H} U^{-H}
    p = -sig[..., :, None] * g
    top = sig[..., :, None] * p
    return _mm(frame, z1 - p) + jnp.concatenate([top, z2], axis=-2)
