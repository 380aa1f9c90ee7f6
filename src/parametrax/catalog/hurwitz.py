r"""Hurwitz (continuous-time stable) matrices: ``Hurwitz`` (geotorch's ``Hurwitz``).

A square matrix is *Hurwitz* when every eigenvalue has a negative real part: ``x' = A x`` then
decays to 0 (stable linear dynamical systems, neural ODEs, state-space models). With a decay
margin ``alpha >= 0`` the set is ``{A : Re λ(A) < -alpha}``, i.e. ``A + alpha I`` is Hurwitz.

The maths (Lyapunov's theorem): ``B`` is Hurwitz iff there is a symmetric positive-definite
``P`` with ``BᵀP + PB`` negative definite. Write ``B = C Q`` with ``Q`` positive definite. Then
``Bᵀ Q + Q B = Q (C + Cᵀ) Q``, which is negative definite exactly when the symmetric part of
``C`` is, so every ``B = (J - R) Q`` (``J`` skew, ``R`` and ``Q`` positive definite) is
Hurwitz; and every Hurwitz ``B`` is one of these (take ``Q = P`` from the Lyapunov equation
``BᵀP + PB = -I``: then ``C = B P^{-1}`` has symmetric part ``-P^{-2}/2``). This is the
dissipative-Hamiltonian form of a stable system (geotorch writes the same set as
``P^{-1}(S - Q/2) - alpha I``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from parametrax._core import Parametrization
from parametrax._errors import ParametrizationError, ParametrizationTypeError
from parametrax._numerics import eye_like, inv_softplus, mT, require_square, widen

__all__ = ["Hurwitz"]

Array = jax.Array
_HIGHEST = lax.Precision.HIGHEST
# Margin of the projection of a value that is not Hurwitz (see Hurwitz.right_inverse).
_SHIFT_MARGIN = 1e-2


def _mm(a: Array, b: Array) -> Array:
    return jnp.matmul(a, b, precision=_HIGHEST)


def _cholesky_factor(x: Array) -> Array:
    """``tril(x, -1) + diag(softplus(diag x))``: a lower-triangular factor, positive diagonal."""
    n = x.shape[-1]
    idx = jnp.arange(n)
    d = jax.nn.softplus(jnp.diagonal(x, axis1=-2, axis2=-1))
    return jnp.tril(x, -1).at[..., idx, idx].set(d)


def _raw_of_factor(factor: Array) -> Array:
    """The inverse of :func:`_cholesky_factor` on lower-triangular matrices, diagonal > 0."""
    n = factor.shape[-1]
    idx = jnp.arange(n)
    d = jnp.diagonal(factor, axis1=-2, axis2=-1)
    d = jnp.maximum(d, jnp.finfo(d.dtype).tiny)
    return jnp.tril(factor, -1).at[..., idx, idx].set(inv_softplus(d))


def lyapunov(b: Array, refine: int = 1) -> Array:
    r"""The solution ``P`` of ``BᵀP + PB = -I`` for square ``(..., n, n)`` ``B`` (batched).

    Solved as the ``n² x n²`` linear system ``(Bᵀ ⊗ I + I ⊗ Bᵀ) vec(P) = -vec(I)`` (row-major
    ``vec``), LU-factorised once, followed by ``refine`` steps of iterative refinement (solve
    again for the residual ``BᵀP + PB + I``): the residual, which decides whether
    ``BᵀP + PB`` is negative definite, then stays small even when the system is badly
    conditioned. ``O(n⁶)`` work, fine for the sizes of state matrices (``n`` up to a few
    dozen); it is only run by ``right_inverse`` and ``in_manifold``, never in ``forward``. The
    system is singular when two eigenvalues of ``B`` sum to 0 (the result is then not finite).
    ``P`` is symmetrised.
    """
    n = b.shape[-1]
    batch = b.shape[:-2]
    bt = mT(b)
    eye = jnp.eye(n, dtype=b.dtype)
    kron = jnp.einsum("...ij,kl->...ikjl", bt, eye) + jnp.einsum("ij,...kl->...ikjl", eye, bt)
    lu_piv = jax.scipy.linalg.lu_factor(kron.reshape(batch + (n * n, n * n)))

    def solve_vec(rhs: Array) -> Array:  # (..., n, n) -> (..., n, n)
        flat = rhs.reshape(batch + (n * n, 1))
        return jax.scipy.linalg.lu_solve(lu_piv, flat).reshape(b.shape)

    minus_eye = jnp.broadcast_to(-eye, b.shape)
    p = solve_vec(minus_eye)
    for _ in range(refine):
        residual = _mm(bt, p) + _mm(p, b) - minus_eye
        p = p - solve_vec(residual)
    return (p + mT(p)) / 2


def _batch_all(ok: Array) -> Array:
    """``ok`` per matrix (batch shape) from an elementwise ``(..., n, n)`` test."""
    return jnp.all(ok, axis=(-2, -1))


class Hurwitz(Parametrization):
    r"""Square matrices whose eigenvalues all have real part ``< -alpha`` (geotorch's ``Hurwitz``).

    The map (two raw arrays, ``original0 = X``, ``original1 = Y``, each ``(..., n, n)``)::

        J = triu(X, 1) - triu(X, 1)ᵀ                        skew
        R = L Lᵀ,  L = tril(X, -1) + diag(softplus(diag X))  positive definite
        Q = K Kᵀ,  K = tril(Y, -1) + diag(softplus(diag Y))  positive definite
        A = (J - R) Q - alpha I

    Every such ``A`` is in the set, and every point of the set is reached (Lyapunov's theorem:
    see the module docstring), so an optimizer stepping on ``X``, ``Y`` can never leave it. The
    strict upper triangle of ``Y`` is unused (zero gradient). ``forward`` costs three matrix
    products, no solve and no eigenvalue.

    ``right_inverse(A)``: with ``B = A + alpha I``, solves the Lyapunov equation
    ``BW + WBᵀ = -I`` (:func:`lyapunov` of ``Bᵀ``), sets ``Q = W^{-1}``, ``C = B W`` (whose
    symmetric part is ``-I/2``: well conditioned), ``J = (C - Cᵀ)/2``, ``R = -(C + Cᵀ)/2`` and
    reads ``X``, ``Y`` off the Cholesky factors of ``R`` and ``Q``: exact up to rounding (about
    ``eps cond(W) ||B||``) for every ``A`` in the set. (Should rounding leave ``R`` barely
    positive definite, its smallest eigenvalue is lifted to ``10 n eps ||R||``.) A value that
    is not in the set (``W`` not positive definite) is **projected** by a shift to the left:
    ``A - (λ_max(sym(B)) + δ) I`` with ``sym(B) = (B + Bᵀ)/2`` and
    ``δ = 10⁻² max(1, |λ(sym(B))|_max)``, whose ``B`` then has a negative definite symmetric
    part (so ``Q = I`` represents it). This keeps the eigenvectors and moves every eigenvalue
    by the same real amount; it is not the nearest matrix of the set (that problem is
    non-convex, with no closed form). The Lyapunov solve costs ``O(n⁶)``; it runs at
    registration and assignment only.

    ``in_manifold(x)``: square, real, and ``P`` from ``(x + alpha I)ᵀP + P(x + alpha I) = -I`` is
    finite and positive definite (its Cholesky factorisation succeeds), which by Lyapunov's
    theorem is ``max Re λ(x) < -alpha`` (a strict inequality; ``atol`` is not used). No
    non-symmetric eigensolver is needed, so it runs on every backend.

    ``sample(key, shape)``: a random point well inside the set (see :meth:`sample`).

    Shapes ``(..., n, n)``, real floating point (bfloat16 / float16 computed in float32 by the
    right inverse); leading axes are batch axes.

    Args:
      alpha: the decay margin, a Python float ``>= 0``: eigenvalues have real part ``< -alpha``.

    >>> import jax, numpy as np
    >>> from parametrax.catalog.hurwitz import Hurwitz
    >>> h = Hurwitz(alpha=0.5)
    >>> x, y = jax.random.normal(jax.random.key(0), (2, 4, 4))
    >>> a = h(x, y)
    >>> bool(np.linalg.eigvals(np.asarray(a)).real.max() < -0.5)
    True
    >>> bool(h.in_manifold(a))
    True
    >>> raw = h.right_inverse(a)                # (X, Y): stored as original0, original1
    >>> bool(np.allclose(h(*raw), a, atol=1e-4))
    True
    """

    alpha: float = 0.0

    def __post_init__(self):
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            raise ParametrizationTypeError(
                f"`Hurwitz`: `alpha` must be a Python float; got {type(a).__name__} {a!r} "
                "(arrays are not hashable configuration)."
            )
        if not (a >= 0 and a != float("inf")):
            raise ParametrizationError(
                f"`Hurwitz`: `alpha` (the decay margin: eigenvalues have real part < -alpha) "
                f"must be a finite float >= 0; got {a!r}."
            )
        object.__setattr__(self, "alpha", float(a))

    def forward(self, x: Array, y: Array) -> Array:
        require_square(self, x, real=True)
        require_square(self, y, real=True)
        if x.shape[-1] != y.shape[-1]:
            raise ParametrizationError(
                f"{self!r}: the two raw arrays must hold matrices of one size; got shapes "
                f"{tuple(x.shape)} and {tuple(y.shape)}."
            )
        u = jnp.triu(x, 1)
        j = u - mT(u)
        lo = _cholesky_factor(x)
        k = _cholesky_factor(y)
        r = _mm(lo, mT(lo))
        q = _mm(k, mT(k))
        out = _mm(j - r, q)
        return out - self.alpha * eye_like(out)

    def right_inverse(self, value: Array) -> tuple[Array, Array]:
        require_square(self, value, real=True)
        dtype = value.dtype
        b = widen(value)
        b = b + self.alpha * eye_like(b)
        # The Hurwitz branch: W from B W + W Bᵀ = -I, Q = W^{-1}, C = B W (so sym(C) = -I/2).
        w = lyapunov(mT(b))
        ok = _batch_all(jnp.isfinite(jnp.linalg.cholesky(w)))
        q = jnp.linalg.solve(w, jnp.broadcast_to(jnp.eye(b.shape[-1], dtype=b.dtype), b.shape))
        k = jnp.linalg.cholesky((q + mT(q)) / 2)
        c = _mm(b, w)
        j = (c - mT(c)) / 2
        r = -(c + mT(c)) / 2
        # R = I/2 up to the residual of the Lyapunov solve; should rounding leave it barely
        # positive definite, its smallest eigenvalue is lifted to a floor (the value then moves
        # by (floor - λ_min(R)) Q, of the order of the rounding already there).
        lam_r = jnp.linalg.eigvalsh(r)
        n = b.shape[-1]
        floor = 10 * n * jnp.finfo(b.dtype).eps * jnp.max(jnp.abs(lam_r), axis=-1)
        lift = jnp.maximum(floor - lam_r[..., 0], 0.0)[..., None, None]
        lo = jnp.linalg.cholesky(r + lift * eye_like(r))
        ok = ok & _batch_all(jnp.isfinite(k) & jnp.isfinite(lo))
        # The projection of anything else: shift left until sym(B) < 0, then Q = I.
        sym = (b + mT(b)) / 2
        lam = jnp.linalg.eigvalsh(sym)
        margin = _SHIFT_MARGIN * jnp.maximum(1.0, jnp.max(jnp.abs(lam), axis=-1))
        shift = jnp.maximum(lam[..., -1] + margin, 0.0)[..., None, None]
        eye = eye_like(b)
        lo_shift = jnp.linalg.cholesky(shift * eye - sym)
        keep = ok[..., None, None]
        j = jnp.where(keep, j, (b - mT(b)) / 2)
        lo = jnp.where(keep, lo, lo_shift)
        k = jnp.where(keep, k, eye)
        raw_x = jnp.triu(j, 1) + _raw_of_factor(lo)
        raw_y = _raw_of_factor(k)
        return raw_x.astype(dtype), raw_y.astype(dtype)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``max Re λ(x) < -alpha``, tested by Lyapunov's theorem (see the class docstring;
        strict: ``atol`` is not used)."""
        del atol
        require_square(self, x, real=True)
        b = widen(x)
        p = lyapunov(b + self.alpha * eye_like(b))
        return jnp.all(jnp.isfinite(jnp.linalg.cholesky(p)))

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``(J - R) Q - alpha I`` with ``J = (G₁ - G₁ᵀ)/sqrt(2n)``, ``R = I + G₂G₂ᵀ/n``,
        ``Q = I + G₃G₃ᵀ/n`` (``G`` standard normal): a point well inside the set, every
        eigenvalue's real part ``<= -alpha - 1/λ_max(Q)`` (Lyapunov with ``P = Q``)."""
        shape = tuple(shape)
        g1, g2, g3 = jax.random.normal(key, (3,) + shape, dtype)
        require_square(self, g1, real=True)
        n = shape[-1]
        eye = eye_like(g1)
        j = (g1 - mT(g1)) / jnp.sqrt(2.0 * n).astype(dtype)
        r = eye + _mm(g2, mT(g2)) / n
        q = eye + _mm(g3, mT(g3)) / n
        return _mm(j - r, q) - self.alpha * eye
