r"""Hurwitz (continuous-time stable) matrices: ``Hurwitz`` (geotorch's ``Hurwitz``).

A square matrix is *Hurwitz* when every eigenvalue has a negative real part: ``x' = A x`` then
decays to 0 (stable linear dynamical systems, neural ODEs, state-space models). With a decay
margin ``alpha >= 0`` the set is ``{A : Re λ(A) < -alpha}``, i.e. ``A + alpha I`` is Hurwitz.

The maths (Lyapunov's theorem): ``B`` is Hurwitz iff the Lyapunov equation
``BW + WBᵀ = -I`` has a symmetric positive-definite solution ``W``. Then ``Q = W^{-1}`` and
``C = BW`` give ``B = C Q`` with ``C + Cᵀ = BW + WBᵀ = -I``, i.e. ``C = J - I/2`` with ``J``
skew. Conversely every ``B = (J - I/2) Q`` (``J`` skew, ``Q`` positive definite) is Hurwitz:
``BᵀQ + QB = -Q²`` is negative definite. So ``(J, Q) -> (J - I/2) Q`` is a bijection from
(skew) x (positive definite) onto the Hurwitz matrices: ``n(n-1)/2 + n(n+1)/2 = n²`` numbers,
the dimension of the set. It is the dissipative-Hamiltonian form of a stable system (geotorch
writes the same set as ``P^{-1}(S - Q/2) - alpha I`` with a second PSD factor, which adds
``n(n+1)/2`` redundant numbers).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from parametrax._core import Parametrization
from parametrax._errors import ParametrizationError, ParametrizationTypeError
from parametrax._numerics import expm, eye_like, mT, require_square, wide_dtype, widen, widened

__all__ = ["Hurwitz", "lyapunov", "lyapunov_schur", "lyapunov_kron", "sym_radius", "skew_radius"]

Array = jax.Array
_HIGHEST = lax.Precision.HIGHEST
# Margin of the projection of a value that is not Hurwitz (see Hurwitz.right_inverse).
_SHIFT_MARGIN = 1e-2
# The rounding margin of forward: every eigenvalue is moved left by ROUNDING_ULPS * eps(dtype) *
# ||B||_F (see Hurwitz), so that the value rounded to its dtype is still in the set.
ROUNDING_ULPS = 2.0  # measured: 1 and 2 keep every stress raw of tests/test_hurwitz.py inside


def sym_radius(dtype) -> float:
    r"""``R_S = log(1/eps) / 2`` of ``dtype``: :class:`Hurwitz` scales ``S`` back to
    ``||S||_∞ <= R_S`` (the largest absolute row sum, which bounds every eigenvalue), so that
    ``cond(Q) = cond(expm(S)) <= exp(2 R_S) = 1/eps``: ``λ_min(Q)`` stays above the rounding of
    ``Q``. float32: 7.97; bfloat16: 2.43; float16: 3.47; float64: 18.0."""
    return 0.5 * math.log(1.0 / float(jnp.finfo(dtype).eps))


def skew_radius(dtype) -> float:
    r"""``R_J = 1 / (16 eps)`` of ``dtype``: :class:`Hurwitz` scales ``J`` back to
    ``||J||_∞ <= R_J``, so that the rounding of the rotation part ``J Q`` stays below a sixteenth
    of ``||Q||``. float32: 5.2e5; bfloat16: 8; float16: 64; float64: 2.8e14. With ``R_S`` it keeps
    every entry of ``A`` below ``(R_J + 1/2) exp(R_S) + alpha`` (float32: 1.5e9; float16: 2.1e3),
    finite with its square."""
    return 1.0 / (16.0 * float(jnp.finfo(dtype).eps))


def _frobenius(x: Array) -> Array:
    return jnp.sqrt(jnp.sum(x * x, axis=(-2, -1)))


def _clip_inf(x: Array, radius: float) -> Array:
    """``x * min(1, radius / ||x||_∞)`` per matrix (``||x||_∞``: the largest absolute row sum)."""
    norm = jnp.max(jnp.sum(jnp.abs(x), axis=-1), axis=-1)[..., None, None]
    r = jnp.asarray(radius, x.dtype)
    return x * (r / jnp.maximum(norm, r))


def _mm(a: Array, b: Array) -> Array:
    return jnp.matmul(a, b, precision=_HIGHEST)


def _symmetric_of(x: Array) -> Array:
    """``tril(x) + tril(x, -1)ᵀ``: the symmetric matrix held by the lower triangle of ``x``."""
    return jnp.tril(x) + mT(jnp.tril(x, -1))


def lyapunov(b: Array, refine: int = 1) -> Array:
    r"""The solution ``P`` of ``BᵀP + PB = -I`` for square ``(..., n, n)`` real ``B`` (batched).

    On CPU, the Bartels–Stewart method (:func:`lyapunov_schur`): ``O(n³)`` (one complex Schur
    factorisation and ``n`` triangular solves), as ``scipy.linalg.solve_continuous_lyapunov``.
    On other backends, where XLA has no Schur factorisation, the ``n² x n²`` Kronecker system
    (:func:`lyapunov_kron`, ``O(n⁶)`` work and ``O(n⁴)`` memory: fine up to ``n`` of a few
    dozen). The backend is chosen when the computation is lowered
    (:func:`jax.lax.platform_dependent`). Both follow with ``refine`` steps of iterative
    refinement (solve again for the residual ``BᵀP + PB + I``), so that the residual, which
    decides whether ``BᵀP + PB`` is negative definite, stays small even when the equation is
    badly conditioned. Only ``right_inverse`` and ``in_manifold`` run it, never ``forward``.
    The equation is singular when two eigenvalues of ``B`` sum to 0 (the result is then not
    finite). ``P`` is symmetrised. Differentiable (first derivatives: the tangent solves the
    same equation, ``BᵀṖ + ṖB = -(ḂᵀP + PḂ)``).
    """
    return _lyapunov(b, refine)


@functools.partial(jax.jit, static_argnums=1)
def _lyapunov(b: Array, refine: int) -> Array:
    """:func:`lyapunov`, compiled: an eager call (``in_manifold``, ``right_inverse`` on concrete
    arrays) runs as one compiled program instead of the Schur solver's ``n`` column solves op by
    op (200 ms for one 4 x 4 matrix); inside a trace it is inlined as any jitted function."""
    return jax.lax.platform_dependent(
        b, cpu=lambda b: lyapunov_schur(b, refine), default=lambda b: lyapunov_kron(b, refine)
    )


def lyapunov_kron(b: Array, refine: int = 1) -> Array:
    r"""``BᵀP + PB = -I`` as the ``n² x n²`` linear system ``(Bᵀ ⊗ I + I ⊗ Bᵀ) vec(P) = -vec(I)``
    (row-major ``vec``), LU-factorised once, plus ``refine`` steps of iterative refinement:
    ``O(n⁶)`` work, ``O(n⁴)`` memory. Runs on every backend (the fallback of :func:`lyapunov`
    where XLA has no Schur factorisation); ``P`` is symmetrised."""
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


def _schur_factor(b: Array) -> tuple[Array, Array]:
    """``(U, T)`` with ``Bᵀ = U T Uᴴ``: the complex Schur form (``T`` upper triangular)."""
    cdtype = wide_dtype(b.dtype, jnp.complex64)
    t, u = jax.scipy.linalg.schur(mT(b).astype(cdtype), output="complex")
    return u, t


def _schur_solve(u: Array, t: Array, c: Array) -> Array:
    r"""``P`` with ``BᵀP + PB = -C`` from the Schur form ``Bᵀ = U T Uᴴ`` (Bartels–Stewart).

    With ``Y = UᴴPU`` and ``F = UᴴCU`` the equation is ``TY + YTᴴ = -F``; ``T`` is upper
    triangular, so column ``j`` of ``Y`` solves the triangular system
    ``(T + conj(T_jj) I) y_j = -f_j - Σ_{k>j} conj(T_jk) y_k``, from the last column to the first:
    ``n`` triangular solves of ``O(n²)`` each.
    """
    n = t.shape[-1]
    f = _mm(mT(u).conj(), _mm(c.astype(t.dtype), u))
    eye = jnp.eye(n, dtype=t.dtype)
    diag = jnp.diagonal(t, axis1=-2, axis2=-1)

    def column(i, y):
        j = n - 1 - i
        tj = jnp.take(t, j, axis=-2).conj()  # row j of T, conjugated: (..., n)
        rhs = -jnp.take(f, j, axis=-1) - jnp.einsum("...ik,...k->...i", y, tj, precision=_HIGHEST)
        lhs = t + jnp.take(diag, j, axis=-1).conj()[..., None, None] * eye
        yj = jax.scipy.linalg.solve_triangular(lhs, rhs[..., None], lower=False)[..., 0]
        return lax.dynamic_update_index_in_dim(y, yj, j, axis=-1)

    y = lax.fori_loop(0, n, column, jnp.zeros_like(t))
    p = _mm(u, _mm(y, mT(u).conj())).real.astype(c.dtype)
    return (p + mT(p)) / 2


def _schur_refined(u: Array, t: Array, b: Array, c: Array, refine: int) -> Array:
    p = _schur_solve(u, t, c)
    for _ in range(refine):
        residual = _mm(mT(b), p) + _mm(p, b) + c
        p = p + _schur_solve(u, t, residual)  # B'ΔP + ΔPB = -residual
    return p


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _lyapunov_schur(b: Array, c: Array, refine: int) -> Array:
    u, t = _schur_factor(b)
    return _schur_refined(u, t, b, c, refine)


@_lyapunov_schur.defjvp
def _lyapunov_schur_jvp(refine, primals, tangents):
    b, c = primals
    db, dc = tangents
    u, t = _schur_factor(b)
    p = _schur_refined(u, t, b, c, refine)
    # d(BᵀP + PB) = -dC: BᵀdP + dP B = -(dC + dBᵀP + P dB), the same equation.
    dp = _schur_refined(u, t, b, dc + _mm(mT(db), p) + _mm(p, db), refine)
    return p, dp


def lyapunov_schur(b: Array, refine: int = 1) -> Array:
    r"""``BᵀP + PB = -I`` by the Bartels–Stewart method: the complex Schur form ``Bᵀ = U T Uᴴ``
    (``jax.scipy.linalg.schur``, CPU only in XLA), then ``TY + YTᴴ = -I`` column by column
    (triangular solves) and ``P = U Y Uᴴ``, plus ``refine`` steps of iterative refinement.
    ``O(n³)`` work and ``O(n²)`` memory; backward stable like
    ``scipy.linalg.solve_continuous_lyapunov``. First derivatives by a custom JVP (the tangent
    solves the same equation with the same factorisation). ``P`` is symmetrised."""
    c = jnp.broadcast_to(jnp.eye(b.shape[-1], dtype=b.dtype), b.shape)
    return _lyapunov_schur(b, c, refine)


def _is_pd(p: Array) -> Array:
    """Per matrix (batch shape): ``p`` is finite and positive definite (Cholesky succeeds)."""
    return jnp.all(jnp.isfinite(jnp.linalg.cholesky(p)), axis=(-2, -1))


def _rounding_margin(dtype) -> float:
    """``c = ROUNDING_ULPS * eps`` of the value's dtype (the dtype it is rounded to)."""
    return ROUNDING_ULPS * float(jnp.finfo(dtype).eps)


def _check_margin(p, x: Array) -> float:
    """The rounding margin of ``x``'s dtype; raises where ``n`` is so large that ``δ`` would be
    most of ``||B||`` (``4 eps sqrt(n) >= 1``: bfloat16 with ``n >= 1024``)."""
    margin = _rounding_margin(x.dtype)
    n = x.shape[-1]
    if 2 * margin * math.sqrt(n) >= 1:
        raise ParametrizationError(
            f"`{type(p).__name__}`: {n} x {n} matrices in {jnp.dtype(x.dtype).name} are too large "
            f"for the rounding margin (2 eps ||B||_F must stay below ||B||_F / (2 sqrt(n))); "
            f"expected n < {int(1 / (4 * margin**2))}: use float32."
        )
    return margin


@widened
def _forward(x: Array, alpha: float, r_s: float, r_j: float, margin: float) -> Array:
    u = jnp.triu(x, 1)
    eye = eye_like(x)
    j = _clip_inf(u - mT(u), r_j)
    b = _mm(j - 0.5 * eye, expm(_clip_inf(_symmetric_of(x), r_s)))
    delta = margin * _frobenius(b)[..., None, None]
    return b - (alpha + delta) * eye


def _solve_delta(b: Array, margin: float) -> Array:
    """``d >= 0`` with ``d = margin ||B + d I||_F`` (per matrix): the positive root of
    ``(1/margin² - n) d² - 2 tr(B) d - ||B||_F² = 0``, written without squaring ``||B||``."""
    n = b.shape[-1]
    k = 1.0 / margin**2 - n
    norm = _frobenius(b)
    t = jnp.trace(b, axis1=-2, axis2=-1) / jnp.maximum(norm, jnp.finfo(b.dtype).tiny)
    return norm * (t + jnp.sqrt(t * t + k)) / k


class Hurwitz(Parametrization):
    r"""Square matrices whose eigenvalues all have real part ``< -alpha`` (geotorch's ``Hurwitz``).

    The map (one raw array ``X`` of the value's shape ``(..., n, n)``, every entry used)::

        J = clip(triu(X, 1) - triu(X, 1)ᵀ, R_J)  skew (the strict upper triangle)
        S = clip(tril(X) + tril(X, -1)ᵀ, R_S)    symmetric (the lower triangle and diagonal)
        Q = expm(S)                              positive definite
        B = (J - I/2) Q                          Hurwitz (see the module docstring)
        A = B - (alpha + δ) I,   δ = 2 eps ||B||_F

    ``clip(M, R) = M min(1, R / ||M||_∞)`` (``||M||_∞``: the largest absolute row sum) scales
    a matrix back into a ball: ``R_S = log(1/eps)/2`` (:func:`sym_radius`) bounds every
    eigenvalue of ``S`` by ``R_S``, so ``cond(Q) <= 1/eps``, and ``R_J = 1/(16 eps)``
    (:func:`skew_radius`) bounds the rotation part; ``eps`` is that of the value's dtype
    (float32: ``R_S = 7.97``, ``R_J = 5.2e5``; bfloat16: ``2.43``, ``8``). Inside the balls
    (every raw of moderate size: ``X = 0``, a standard normal ``4 x 4`` raw) the map is the
    bijection ``(J, S) -> (J - I/2) expm(S)`` of the module docstring, shifted by ``δ``;
    outside, the raw is read as its scaled-back version. The balls and ``δ`` are what make the
    promise hold after rounding: ``B``'s eigenvalues have real part
    ``<= -λ_min(Q)/2 = -exp(λ_min(S))/2``, a margin that rounding (about
    ``eps ||B||``, more where ``B`` is far from normal) can erase once ``Q`` is badly
    conditioned or ``J`` large; the **rounding margin** ``δ`` moves every eigenvalue left by
    ``2 eps ||B||_F`` (``eps`` of the value's dtype: bfloat16 values are computed in float32 and
    rounded to bfloat16 with their margin), and the balls keep the sensitivity of the
    eigenvalues to that rounding below it. So every finite raw, however large (an optimizer
    step of any size), gives a finite ``A`` (entries below ``(R_J + 1/2) exp(R_S) + alpha +
    δ``: float32 1.5e9, float16 2.1e3) that is in the set *as stored in its dtype* (checked
    with numpy's eigenvalues in tests/test_hurwitz.py over raws of norm up to 1e8; without
    ``δ`` about a third of such raws lose membership). ``X = 0`` gives
    ``A = -(1/2 + alpha + δ) I`` with ``δ = sqrt(n) eps`` (float32, ``n = 4``: ``2.4e-7``).
    ``forward`` costs one :func:`parametrax._numerics.expm` and one product, no solve and no
    eigenvalue.

    ``right_inverse(A)``: with ``B = A + alpha I``, finds ``δ`` with ``δ = 2 eps ||B + δI||_F``
    (a quadratic), solves ``B₀W + WB₀ᵀ = -I`` for ``B₀ = B + δ I`` (:func:`lyapunov` of
    ``B₀ᵀ``), and reads ``X`` off ``J = skew(B₀W)`` and ``S = log(Q) = -log(W)`` (by ``eigh``
    of ``W``): exact up to rounding (about ``eps cond(W) ||B||``) for every ``A`` of the set
    whose ``J``, ``S`` lie in the balls and whose ``B₀`` is Hurwitz (``A`` is not within ``δ``
    of the edge); ``J`` and ``S`` outside the balls are scaled back as ``forward`` would. A value
    that is not in the set, or within ``δ`` of its edge (``W`` not positive definite), is
    **projected** by a shift to the left, ``A - (λ_max(sym(B)) + m) I`` with
    ``sym(B) = (B + Bᵀ)/2``, ``m = 10⁻² max(1, |λ(sym(B))|_max) + m_δ`` and
    ``m_δ = 4 eps (||B||_F + sqrt(n) |λ_max(sym(B))|) / (1 - 4 eps sqrt(n))`` (at least twice
    the ``δ`` of the shifted value, so ``sym(B₀)`` is negative definite and ``B₀`` Hurwitz;
    float32: ``m_δ`` is about ``5e-7 ||B||_F``), and that is inverted. The shift keeps the
    eigenvectors and moves every eigenvalue by one real amount; it is not the nearest matrix
    of the set (that problem is non-convex, with no closed form). The Lyapunov solves
    (:func:`lyapunov`) cost ``O(n³)`` on CPU (Bartels–Stewart) and ``O(n⁶)`` on backends
    without a Schur factorisation (GPU, TPU: the Kronecker system, fine up to ``n`` of a few
    dozen); they run at registration, assignment and ``in_manifold`` only.

    ``in_manifold(x)``: square, real, and ``P`` from ``(x + alpha I)ᵀP + P(x + alpha I) = -I`` is
    finite and positive definite (its Cholesky factorisation succeeds), which by Lyapunov's
    theorem is ``max Re λ(x) < -alpha`` (a strict inequality; ``atol`` is not used; a batch is
    in the set when every matrix is). A matrix with two eigenvalues summing to ``-2 alpha`` (e.g.
    ``±iω - alpha``, on the boundary) makes the equation singular: ``P`` is not finite and the
    answer is False. Runs on every backend (see :func:`lyapunov`).

    ``sample(key, shape)``: a random point well inside the set (see :meth:`sample`).

    Shapes ``(..., n, n)``, real floating point (bfloat16 / float16: the right inverse computes
    in float32); leading axes are batch axes.

    Args:
      alpha: the decay margin, a Python float ``>= 0``: eigenvalues have real part ``< -alpha``.

    >>> import jax, numpy as np
    >>> from parametrax.catalog.hurwitz import Hurwitz
    >>> h = Hurwitz(alpha=0.5)
    >>> a = h(jax.random.normal(jax.random.key(0), (4, 4)))
    >>> bool(np.linalg.eigvals(np.asarray(a)).real.max() < -0.5)
    True
    >>> bool(h.in_manifold(a))
    True
    >>> err = np.abs(h(h.right_inverse(a)) - a).max() / np.abs(a).max()
    >>> bool(err < 1e-4)                        # the right inverse, up to rounding
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

    def forward(self, x: Array) -> Array:
        require_square(self, x, real=True)
        d = x.dtype
        return _forward(
            x,
            alpha=self.alpha,
            r_s=sym_radius(d),
            r_j=skew_radius(d),
            margin=_check_margin(self, x),
        )

    def right_inverse(self, value: Array) -> Array:
        require_square(self, value, real=True)
        dtype = value.dtype
        margin = _check_margin(self, value)
        n = value.shape[-1]
        b = widen(value)
        eye = eye_like(b)
        b = b + self.alpha * eye
        # forward subtracts delta = margin ||B0||_F: B0 = B + delta I must be Hurwitz.
        ok = _is_pd(lyapunov(mT(b + _solve_delta(b, margin)[..., None, None] * eye)))
        # Off the set (or within the rounding margin of its edge): shift left until
        # sym(B) < -m with m > the delta of the shifted B (see the docstring), so that
        # sym(B0) < 0 and B0 is Hurwitz.
        sym = (b + mT(b)) / 2
        lam = jnp.linalg.eigvalsh(sym)
        top = lam[..., -1]
        m = _SHIFT_MARGIN * jnp.maximum(1.0, jnp.max(jnp.abs(lam), axis=-1))
        m = m + 2 * margin * (_frobenius(b) + math.sqrt(n) * jnp.abs(top)) / (
            1 - 2 * margin * math.sqrt(n)
        )
        shift = jnp.where(ok, 0.0, jnp.maximum(top + m, 0.0))
        b = b - shift[..., None, None] * eye
        b = b + _solve_delta(b, margin)[..., None, None] * eye
        # W from B0 W + W B0ᵀ = -I, Q = W^{-1}, J = skew(B0 W).
        w = lyapunov(mT(b))
        c = _mm(b, w)
        lam_w, v = jnp.linalg.eigh(w)
        lam_w = jnp.maximum(lam_w, jnp.finfo(lam_w.dtype).tiny)
        s = -_mm(v * jnp.log(lam_w)[..., None, :], mT(v))  # log(W^{-1})
        # The raw forward reads (J and S scaled back into their balls, as forward does).
        j = _clip_inf((c - mT(c)) / 2, skew_radius(dtype))
        s = _clip_inf((s + mT(s)) / 2, sym_radius(dtype))
        return (jnp.triu(j, 1) + jnp.tril(s)).astype(dtype)

    def in_manifold(self, x: Array, atol: float | None = None) -> Array:
        """``max Re λ(x) < -alpha``, tested by Lyapunov's theorem (see the class docstring;
        strict: ``atol`` is not used)."""
        del atol
        require_square(self, x, real=True)
        b = widen(x)
        return jnp.all(_is_pd(lyapunov(b + self.alpha * eye_like(b))))

    def sample(self, key: Array, shape, dtype=jnp.float32) -> Array:
        """``(J - I/2) Q - alpha I`` with ``J = (G₁ - G₁ᵀ)/sqrt(2n)`` and ``Q = I + G₂G₂ᵀ/n``
        (``G`` standard normal): a point well inside the set, every eigenvalue's real part
        ``<= -alpha - 1/2`` (``λ_min(Q) >= 1``)."""
        shape = tuple(shape)
        g1, g2 = jax.random.normal(key, (2,) + shape, dtype)
        require_square(self, g1, real=True)
        n = shape[-1]
        eye = eye_like(g1)
        j = (g1 - mT(g1)) / jnp.sqrt(2.0 * n).astype(dtype)
        q = eye + _mm(g2, mT(g2)) / n
        return _mm(j - 0.5 * eye, q) - self.alpha * eye
