"""Matrix maths shared by the catalog, each piece once: the matrix exponential, the Cayley map,
polar and QR projections, Newton–Schulz, safe norms. Batch-generic on the last two axes.

Helpers with loops or LAPACK calls are jitted at module level, so that eager calls
(registration, assignment outside ``jit``) compile once per shape.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from parametrax._numerics.checks import widen, widened

Array = jax.Array

__all__ = [
    "mT",
    "mH",
    "eye_like",
    "eye_batch",
    "solve",
    "safe_norm",
    "max_abs",
    "expm",
    "cayley_map",
    "cayley_half",
    "newton_schulz",
    "polar",
    "special_polar",
    "flip_last_col",
    "qr_positive",
    "sign_or_one",
    "complete",
    "orthonormality_error",
    "keep_or_project",
]

HIGHEST = lax.Precision.HIGHEST


# ------------------------------------------------------------------------------------------------
# Small pieces
# ------------------------------------------------------------------------------------------------
def mT(x: Array) -> Array:
    """Transpose of the last two axes (batch-safe, never ``.T``)."""
    return jnp.swapaxes(x, -1, -2)


def mH(x: Array) -> Array:
    """Conjugate transpose of the last two axes."""
    return jnp.conj(mT(x))


def eye_like(x: Array) -> Array:
    n = x.shape[-1]
    return jnp.broadcast_to(jnp.eye(n, dtype=x.dtype), x.shape)


def eye_batch(batch: tuple, n: int, dtype) -> Array:
    return jnp.broadcast_to(jnp.eye(n, dtype=dtype), tuple(batch) + (n, n))


def solve(a: Array, b: Array) -> Array:
    """``a^{-1} b`` for batched square ``a`` and matrix ``b`` (a solve, never an inverse)."""
    return jnp.linalg.solve(a, b)


def safe_norm(x: Array, axis=None, keepdims: bool = False) -> Array:
    """The L2 norm with gradient 0 (not NaN) at x == 0."""
    sq = jnp.sum(jnp.real(x * jnp.conj(x)), axis=axis, keepdims=keepdims)
    nonzero = sq > 0
    safe_sq = jnp.where(nonzero, sq, jnp.ones_like(sq))
    return jnp.where(nonzero, jnp.sqrt(safe_sq), jnp.zeros_like(sq))


def max_abs(x: Array) -> Array:
    return jnp.max(jnp.abs(x)) if x.size else jnp.zeros((), x.dtype)


# ------------------------------------------------------------------------------------------------
# The matrix exponential
# ------------------------------------------------------------------------------------------------
# Per real bit width: Taylor degree m, Paterson–Stockmeyer block size p, and theta_m, the largest
# 1-norm of X at which T_m(X) = exp(X + E) with ||E|| <= u ||X|| (u = 2^-24, 2^-53): the bound
# sum_k |c_k| theta^(k-1) <= u over the power series log(exp(-x) T_m(x)) = sum_{k>m} c_k x^k
# (Higham 2005; Al-Mohy and Higham 2009), solved with 60-digit mpmath by
# ``python benchmarks/expm_variants.py --theta``. The degrees minimise products + squarings
# (p + m/p - 2 products for the polynomial, log2(||X||_1 / theta) squarings).
_TAYLOR = {32: (12, 4, 1.46166150721), 64: (16, 4, 0.780287425663)}
_SQUARING_BITS = 5
_MAX_SQUARINGS = 2**_SQUARING_BITS - 1  # 31: 1-norms up to 3.1e9 (float32), 1.7e9 (float64)
_NS_EVERY = 8  # skew(-Hermitian) input: one Newton–Schulz step after every 8th squaring ...
_NS_FROM = 3  # ... and one at the end when at least 3 squarings ran


def _mm(u: Array, v: Array) -> Array:
    return jnp.matmul(u, v, precision=HIGHEST)


def _taylor(x: Array, m: int, p: int) -> Array:
    """``sum_{k<=m} x^k / k!`` by Paterson–Stockmeyer: ``p - 1`` products for ``x^2..x^p``,
    then ``m/p - 1`` Horner steps in ``x^p``."""
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    powers = [eye, x]
    for _ in range(p - 1):
        powers.append(_mm(powers[-1], x))
    coef = [1.0 / math.factorial(k) for k in range(m + 1)]

    def block(j: int) -> Array:
        out = coef[j * p] * eye
        for i in range(1, p):
            out = out + coef[j * p + i] * powers[i]
        return out

    t = coef[m] * powers[p] + block(m // p - 1)
    for j in range(m // p - 2, -1, -1):
        t = _mm(t, powers[p]) + block(j)
    return t


def _ns_where(r: Array, mask: Array) -> Array:
    """One Newton–Schulz step ``R (3I - R^H R) / 2`` on the matrices where ``mask``, as a
    value-only correction: its derivative is the identity (the step moves a nearly unitary R
    by O(rounding), so the derivative stays the exponential's own)."""
    eye = jnp.eye(r.shape[-1], dtype=r.dtype)
    fixed = _mm(r, 1.5 * eye - 0.5 * _mm(mH(r), r))
    delta = lax.stop_gradient(jnp.where(mask[..., None, None], fixed - r, jnp.zeros_like(r)))
    return r + delta


def _renormalise(r: Array, k: Array, mask: Array) -> tuple[Array, Array]:
    """Hermitian input: divide ``R`` by the power of two of its largest diagonal entry (exact)
    and add that exponent to ``k`` (``exp(A) = R 2^k``), so that no squaring over- or
    underflows; other matrices pass unchanged."""
    top = jnp.max(jnp.abs(jnp.diagonal(r, axis1=-2, axis2=-1)), axis=-1)
    e = jnp.where(mask & (top > 0) & jnp.isfinite(top), jnp.frexp(top)[1], 0)
    return r * jnp.exp2(-e.astype(k.dtype)).astype(r.dtype)[..., None, None], k + e


def _square_loop(r: Array, k: Array, s: Array, skew: Array, herm: Array):
    """``s`` squarings per matrix in a ``while_loop`` of ``max(s)`` steps (no derivative: used
    for the primal value only, see :func:`_expm_jvp`)."""
    s_max = jnp.max(s)

    def body(carry):
        i, r, k = carry
        on = i < s
        r = jnp.where(on[..., None, None], _mm(r, r), r)
        k = jnp.where(on, 2 * k, k)
        r, k = _renormalise(r, k, herm & on)
        fix = skew & on & ((i + 1) % _NS_EVERY == 0)
        r = lax.cond(jnp.any(fix), lambda r: _ns_where(r, fix), lambda r: r, r)
        return i + 1, r, k

    return lax.while_loop(lambda c: c[0] < s_max, body, (jnp.int32(0), r, k))[1:]


@jax.custom_jvp
def _halve_tangent(y: Array) -> Array:
    """``y``, with its tangent halved (exactly: a power of two). See :func:`_scale_down`."""
    return y


@_halve_tangent.defjvp
def _halve_tangent_jvp(primals, tangents):
    return primals[0], 0.5 * tangents[0]


@jax.custom_jvp
def _scale_down(a: Array, e_value: Array, e_tangent: Array) -> Array:
    """``a 2^-e_value`` per matrix (two factors, never one subnormal power of two) whose
    tangent is scaled by ``2^-e_tangent`` only.

    The differentiable path (:func:`_square_tree`) scales ``A`` by ``2^-s`` with ``s`` fewer
    powers of two on the tangent (``e_tangent = e_value - s``) and halves the tangent at each of
    the ``s`` squarings instead (:func:`_halve_tangent`): the same derivative to the bit (every
    factor is a power of two), but the tangent of every intermediate ``R`` stays of the size of
    the input's tangent, and in reverse mode (the transpose) the cotangent of every intermediate
    stays of the size of the output's cotangent times ``exp(A)``. Scaling by ``2^-s`` up front
    made the cotangents of the squarings ``2^s`` times larger (``|A| / theta`` times), so a
    gradient of size ``c |exp(A)|`` overflowed in the middle (``grad`` of ``sum(1e-3 expm(S))``
    was NaN at eigenvalues ~2e4, where the forward mode was finite)."""
    return _pow2_scale(a, e_value)


@_scale_down.defjvp
def _scale_down_jvp(primals, tangents):
    a, e_value, e_tangent = primals
    return _scale_down(a, e_value, e_tangent), _pow2_scale(tangents[0], e_tangent)


def _pow2_scale(x: Array, e: Array) -> Array:
    """``x 2^-e`` per matrix, in two factors."""
    e1 = e // 2
    for f in (e1, e - e1):
        x = x * jnp.exp2(-f.astype(jnp.finfo(x.dtype).dtype)).astype(x.dtype)[..., None, None]
    return x


def _square_tree(r: Array, k: Array, s: Array, skew: Array, herm: Array):
    """The same squarings (and Newton–Schulz steps and renormalisations, at the same counts)
    as :func:`_square_loop`, differentiable: one ``lax.cond`` per bit of ``s``, highest first,
    each running ``2^b`` unrolled squarings. Every bit's block starts at a multiple of 8
    squarings, so the Newton–Schulz positions inside a block are static. Each squaring halves
    the tangent (see :func:`_scale_down`)."""
    for b in range(_SQUARING_BITS - 1, -1, -1):
        bit = ((s >> b) & 1) > 0

        def chunk(rk, n_sq=2**b, bit=bit):
            y, ky = rk
            for j in range(1, n_sq + 1):
                y, ky = _renormalise(_halve_tangent(_mm(y, y)), 2 * ky, herm)
                if j % _NS_EVERY == 0:
                    y = _ns_where(y, skew)
            return jnp.where(bit[..., None, None], y, rk[0]), jnp.where(bit, ky, rk[1])

        r, k = lax.cond(jnp.any(bit), chunk, lambda rk: rk, (r, k))
    return r, k


def _clamp_log2(out, computed) -> float:
    """``h``: the symmetric clamp puts the largest entry of ``exp(A)`` at ``2^h`` at most.

    Computed in a dtype of the output's range (float32, float64; bfloat16 computed in float32):
    ``h = floor(log2(max)) // 2 - 8`` (2^55 = 3.6e16 float32 / bfloat16, 2^503 float64), i.e.
    ``sqrt(max) / 2^8``: a positive definite ``Y`` has ``||Y||_F <= trace(Y) <= n 2^h``, so the
    sum of squares of an ``n x n`` value (a squared error, a Gram matrix) and its gradient
    (``<= 2 n^2 2^{2h}``) stay finite up to ``n = 256``, and the gradient of ``sum(C * Y)``
    (``<= n 2^h ||C||_F``: the derivative of exp of a symmetric matrix is at most its norm)
    stays finite for any cotangent up to ``||C||_F ~ 2^72 / n``. float16 is computed in float32
    and keeps ``max / 2`` (32752): its derivative is computed in float32 and cannot overflow
    there, and ``sqrt(max) / 2^8`` would clamp ``exp`` from eigenvalue 0 on."""
    if math.floor(math.log2(float(out.max))) < math.floor(math.log2(float(computed.max))):
        return math.log2(float(out.max)) - 1.0
    return float(math.floor(math.log2(float(out.max))) // 2 - 8)


def _expm_impl(a: Array, out_dtype: str, differentiable: bool) -> Array:
    n = a.shape[-1]
    eye = jnp.eye(n, dtype=a.dtype)
    if a.size == 0:
        return jnp.broadcast_to(eye, a.shape)
    m, p, theta = _TAYLOR[jnp.finfo(a.dtype).bits]
    ah = mH(a)
    skew = jnp.all(a == -ah, axis=(-2, -1))
    herm = jnp.all(a == ah, axis=(-2, -1)) & ~skew
    # Scaling: per matrix, the fewest squarings that bring the 1-norm to theta.
    norm = lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(a), axis=-2), axis=-1))
    s_all = jnp.ceil(jnp.log2(jnp.maximum(norm / theta, 1.0)))
    s_all = jnp.where(jnp.isfinite(s_all), jnp.minimum(s_all, 2100.0), 0.0).astype(jnp.int32)
    s = jnp.minimum(s_all, _MAX_SQUARINGS)
    # Skew input beyond the squaring cap keeps its full scaling (exp of a skew matrix of norm
    # theta * 2^31, still unitary); any other is NaN there (as jax.scipy.linalg.expm).
    # The differentiable path moves the tangent's 2^-s into its squarings (see _scale_down).
    x = _scale_down(a, s_all, s_all - s) if differentiable else _pow2_scale(a, s_all)
    r = _taylor(x, m, p)
    k = jnp.zeros(s.shape, jnp.int32)
    r, k = (_square_tree if differentiable else _square_loop)(r, k, s, skew, herm)
    fix = skew & (s >= _NS_FROM)
    r = lax.cond(jnp.any(fix), lambda r: _ns_where(r, fix), lambda r: r, r)
    # Hermitian: exp(A) = R 2^k with R's largest entry (on its diagonal: R is positive
    # definite) in [1/2, 1). Clamp k so that the largest entry lies in [tiny / eps, 2^h].
    info = jnp.finfo(out_dtype)  # the range of the dtype the result is cast to
    top = lax.stop_gradient(jnp.max(jnp.real(jnp.diagonal(r, axis1=-2, axis2=-1)), axis=-1))
    top = jnp.log2(jnp.maximum(top, jnp.finfo(top.dtype).tiny))
    hi = _clamp_log2(info, jnp.finfo(a.dtype)) - top
    lo = math.log2(float(info.tiny)) - math.log2(float(info.eps)) - top
    # The factor is a constant to derivatives (it is 2^integer unless clamped).
    k = lax.stop_gradient(jnp.where(herm, jnp.clip(k.astype(top.dtype), lo, hi), 0.0))
    for _ in range(2):  # two factors: 2^k alone can overflow while the product does not
        r = r * jnp.exp2(0.5 * k).astype(r.dtype)[..., None, None]
    over = (s_all > _MAX_SQUARINGS) & ~skew & ~herm
    return jnp.where(over[..., None, None], jnp.asarray(jnp.nan, r.dtype), r)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _expm_value(a: Array, out_dtype: str) -> Array:
    return _expm_impl(a, out_dtype, differentiable=False)


@_expm_value.defjvp
def _expm_jvp(out_dtype, primals, tangents):
    return jax.jvp(lambda a: _expm_impl(a, out_dtype, differentiable=True), primals, tangents)


_expm = jax.jit(_expm_value, static_argnums=1)


def expm(a: Array) -> Array:
    r"""The matrix exponential of square ``(..., n, n)`` matrices by scaling and squaring.

    **Algorithm.** Per matrix, the fewest ``s`` squarings that bring the 1-norm to ``theta_m``,
    the Taylor polynomial ``T_m`` (float32: degree 12, 5 products, ``theta = 1.46``; float64:
    degree 16, 6 products, ``theta = 0.78``) by Paterson–Stockmeyer, and ``s`` squarings. At
    ``||X||_1 <= theta_m`` the polynomial is ``exp(X + E)`` with ``||E|| <= u ||X||`` (u the
    unit roundoff): the backward-error bound of Higham 2005 / Al-Mohy–Higham 2009, kept for
    EVERY matrix of a batch, because each keeps its own ``s`` (a shared ``s`` from the largest
    norm would over-scale the small ones: ``I + 2^-s X`` loses ``X`` to rounding).

    **Speed and derivatives.** The value runs the squarings in a ``while_loop`` of
    ``max(s)`` steps. Derivatives (``jax.jvp``, ``jacfwd``, ``grad``, Hessians: a
    ``custom_jvp``) differentiate the same arithmetic written with one ``lax.cond`` per bit
    of ``s`` (5 conds, no loop of fixed length), in both modes.

    **Skew-symmetric (skew-Hermitian) input** (exactly ``A == -A^H``, as ``Skew`` and
    ``Orthogonal`` build it): the result stays orthogonal (unitary) at any finite norm. One
    Newton–Schulz step ``R (3I - R^H R)/2`` after every 8th squaring and one at the end
    (when ``s >= 3``) remove the rounding that squaring doubles; each moves ``R`` by
    O(rounding) and is applied to the value only (the derivative is the exponential's). Beyond
    ``theta * 2^31`` (1-norm 3.1e9 in float32) the squarings are capped at 31 and the result is
    ``exp(2^{31-s} A)``, orthogonal but not ``exp(A)``: at that norm float32 entries are
    off by more than ``2 pi`` anyway. Other input beyond the cap gives NaN.

    **Hermitian (symmetric) input** (exactly ``A == A^H``, as ``Symmetric`` builds it): the
    result is ``exp(A)`` while its largest entry is at most ``2^h``; beyond, it is clamped:
    ``exp(A)`` scaled by a positive factor so that its largest entry is ``2^h`` (symmetric
    positive definite and finite for every finite ``A``; the factor is a constant to
    derivatives). ``2^h`` is ``2^55 = 3.6e16`` in float32 / bfloat16 (the clamp starts at
    largest eigenvalue 38.1 for a diagonal ``A``, at most ``38.1 + log(n)`` for any ``n x n``),
    ``2^503`` in float64 (eigenvalue 348.7) and ``max / 2 = 32752`` in float16 (eigenvalue
    10.4). Below ``sqrt(max)``, because the derivative of the clamped value is as large as the
    value: squared errors, Gram matrices and gradients of the clamped value stay finite (the
    reasons and bounds: :func:`_clamp_log2`; float16's derivative is computed in float32).
    Other input that overflows gives ``inf``.

    **Derivatives at large norms.** The differentiable path scales the tangent of ``A`` by
    ``2^-s`` one squaring at a time instead of up front (:func:`_scale_down`), so neither
    tangents nor (in reverse mode) cotangents of the intermediate squares exceed the size of
    the result's derivative: ``grad`` is finite wherever the gradient is.

    bfloat16 / float16 are computed in float32 and cast back. Accuracy and speed against
    float64 ``scipy.linalg.expm`` and ``jax.scipy.linalg.expm``: ``tests/test_numerics.py``,
    ``benchmarks/expm_variants.py``, ``benchmarks/results.md``.
    """
    a = jnp.asarray(a)
    dtype = a.dtype
    wide = widen(a)
    out = _expm(wide, jnp.dtype(dtype).name)
    return out if wide.dtype == dtype else out.astype(dtype)


# ------------------------------------------------------------------------------------------------
# The Cayley map
# ------------------------------------------------------------------------------------------------
def _cayley_resolvent(x: Array) -> tuple[Array, Array]:
    """``M = (I - X)^{-1}`` (one LU and its triangular solves on ``I``) and ``Q = 2M - I``."""
    eye = eye_like(x)
    m = solve(eye - x, eye)
    return m, 2 * m - eye


@jax.custom_jvp
def _cayley_map(x: Array) -> Array:
    return _cayley_resolvent(x)[1]


@_cayley_map.defjvp
def _cayley_map_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    m, q = _cayley_resolvent(x)
    return q, 2 * jnp.matmul(jnp.matmul(m, dx, precision=HIGHEST), m, precision=HIGHEST)


@widened
def cayley_map(x: Array) -> Array:
    r"""``Q = (I - X)^{-1} (I + X)``, computed as ``2 (I - X)^{-1} - I``, with a derivative that
    reuses the inverse.

    Since ``I + X = 2I - (I - X)``, ``Q = 2M - I`` with ``M = (I - X)^{-1}`` for *any* square
    ``X``. One LU gives ``M``; forming ``Q`` from ``M`` rather than by solving against ``I + X``
    costs the same (JAX's inverse is itself a solve against ``I``) and is more accurate for large
    ``X``: the right-hand side ``I`` has norm 1 where ``I + X`` has ``‖X‖`` (float32, 64×64 skew:
    orthogonality 5e-7 at ``‖X‖_F = 1e4`` against 1.2e-5; ``benchmarks/cayley_rate.py
    --accuracy``). The derivative

        dQ = 2 M dX M

    is two matrix products with the ``M`` of the forward: no second factorization, no
    triangular solves (``jnp.linalg.solve``'s own rule reuses the LU factors but still runs two
    triangular solves and a product per backward pass); the reverse-mode gradient is
    ``2 Mᵀ G Mᵀ``. Written as a ``custom_jvp`` rather than a ``custom_vjp`` so that forward mode
    (``jax.jvp``, ``jax.jacfwd``, Hessians) keeps working; JAX transposes the linear rule for
    reverse mode. Acts on the last two axes and broadcasts over leading ones; complex input gives
    the unitary Cayley map of skew-Hermitian ``X``; bfloat16 / float16 are computed in float32.
    The LU is the bulk of the time (``benchmarks/cayley_rate.py``: a getri-style inverse from
    recursive blocked triangular inversions measured no faster on CPU).
    """
    return _cayley_map(x)


@jax.jit
def cayley_half(a: Array) -> Array:
    """``(I - A/2)^{-1} (I + A/2)`` (torch's ``orthogonal`` and the trivializations' Cayley map):
    :func:`cayley_map` of ``A/2``, with its derivative."""
    return cayley_map(0.5 * a)


# ------------------------------------------------------------------------------------------------
# Projections
# ------------------------------------------------------------------------------------------------
def newton_schulz(q: Array) -> Array:
    """One Newton–Schulz step ``Q (3I - QᵀQ) / 2``: removes rounding drift from a nearly
    orthogonal square ``Q`` (the error is squared), leaving an orthogonal one unchanged."""
    eye = jnp.eye(q.shape[-1], dtype=q.dtype)
    return q @ (1.5 * eye - 0.5 * (mT(q) @ q))


@jax.jit
@widened
def polar(x: Array) -> Array:
    """The orthonormal polar factor ``U Vᵀ`` of tall ``x``: the nearest matrix with
    orthonormal columns (Frobenius)."""
    u, _, vh = jnp.linalg.svd(x, full_matrices=False)
    return u @ vh


def flip_last_col(u: Array, flip: Array) -> Array:
    """Negates the last column of ``u`` where ``flip`` (batch-shaped bool) is true."""
    sign = jnp.where(flip, -1.0, 1.0).astype(u.dtype)
    last = u[..., :, -1:] * sign[..., None, None]
    return jnp.concatenate([u[..., :, :-1], last], axis=-1)


@jax.jit
@widened
def special_polar(x: Array) -> Array:
    """The nearest matrix of SO(n) to square ``x``: the polar factor with the sign of the
    singular vector of the smallest singular value flipped when ``det(U Vᵀ) < 0``."""
    u, _, vh = jnp.linalg.svd(x, full_matrices=False)
    neg = jnp.linalg.det(u) * jnp.linalg.det(vh) < 0
    return flip_last_col(u, neg) @ vh


def sign_or_one(d: Array) -> Array:
    """``sign(d)`` with ``+1`` where ``d == 0`` (``-0.0`` included); for complex ``d`` the phase
    ``d / |d|``, ``1`` at 0. The sign fix of every QR here: ``jnp.sign(0) == 0`` would zero the
    column of a rank-deficient (e.g. all-zero) input instead of keeping its orthonormal Q
    column."""
    s = jnp.sign(d)
    return jnp.where(d == 0, jnp.ones_like(s), s)


@jax.jit
@widened
def qr_positive(a: Array) -> Array:
    """The Q factor of ``a = QR`` (``a`` tall, real or complex) with ``diag(R)`` real >= 0.

    Defined for every finite ``a``, rank-deficient or zero included: the Householder QR's Q is
    orthonormal whatever the rank, and a zero ``R_jj`` keeps its column's sign
    (:func:`sign_or_one`), so the result always has orthonormal columns (for a zero ``a``, the
    identity's columns)."""
    q, r = jnp.linalg.qr(a, mode="reduced")
    d = jnp.diagonal(r, axis1=-2, axis2=-1)
    return q * sign_or_one(d)[..., None, :]


@jax.jit
@widened
def complete(y: Array) -> Array:
    """An orthogonal ``(..., n, n)`` matrix whose first ``r`` columns are exactly ``y``
    (``(..., n, r)`` with orthonormal columns); the rest come from a complete QR."""
    n, r = y.shape[-2:]
    if r == n:
        return y
    q, _ = jnp.linalg.qr(y, mode="complete")
    return jnp.concatenate([y, q[..., :, r:]], axis=-1)


def orthonormality_error(y: Array) -> Array:
    """``max |YᵀY - I|`` per matrix (shape ``y.shape[:-2]``) for tall ``y``."""
    k = y.shape[-1]
    return jnp.max(jnp.abs(mT(y) @ y - jnp.eye(k, dtype=y.dtype)), axis=(-2, -1))


def keep_or_project(y: Array, projected: Array, ok: Array) -> Array:
    """``y`` where ``ok`` (already on the manifold, kept exactly) else ``projected``."""
    return jnp.where(ok[..., None, None], y, projected)
