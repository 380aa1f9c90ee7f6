"""Experiments around the matrix exponential (not library code). `python benchmarks/expm_variants.py`
compares the library's expm with jax.scipy.linalg.expm and its previous version (bottom of the file).

The first experiment: what a reverse-mode-only matrix exponential would save.

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

import math

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
    a = a / (2.0**s).astype(a.dtype)
    idx = jnp.digitize(norm, jnp.array([4.258730016922831e-001, 1.880152677804762e000]))
    u, v = lax.switch(idx, [_pade3, _pade5, _pade7], a)
    r = jnp.linalg.solve(v - u, v + u)
    r = _square(r, jnp.minimum(s, MAX_SQUARINGS).astype(jnp.int32))
    return jnp.where(s > MAX_SQUARINGS, jnp.nan, r)


# ------------------------------------------------------------------------------------------------
# The library's expm against jax.scipy.linalg.expm and the library's previous one (issue 15.3)
# ------------------------------------------------------------------------------------------------
def expm_previous(a):
    """parametrax's expm before issue 15 (float32 path): scale to 1-norm <= 1, Taylor degree 11
    by Paterson–Stockmeyer, squarings in a fixed 32-step ``fori_loop`` of ``lax.cond``."""
    n = a.shape[-1]
    eye = jnp.eye(n, dtype=a.dtype)
    norm = jnp.max(jnp.sum(jnp.abs(a), axis=-2), axis=-1)
    s = jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(norm, 1.0))), 0, 32).astype(jnp.int32)
    x = a * jnp.exp2(-s.astype(a.dtype))[..., None, None]
    powers = [eye, x]
    for _ in range(3):
        powers.append(_dot(powers[-1], x))
    coef = [1.0 / math.factorial(k) for k in range(12)]

    def block(j):
        return sum((coef[j * 4 + i] * powers[i] for i in range(1, 4)), coef[j * 4] * eye)

    t = block(2)
    for j in (1, 0):
        t = _dot(t, powers[4]) + block(j)
    s_max, todo = jnp.max(s), s[..., None, None]

    def square(i, r):
        return lax.cond(i < s_max, lambda m: jnp.where(i < todo, _dot(m, m), m), lambda m: m, r)

    return lax.fori_loop(0, 32, square, t)


# ------------------------------------------------------------------------------------------------
# The floor under ``grad`` for ONE matrix (issue 15.3): the library's arithmetic, no ``lax.cond``
# ------------------------------------------------------------------------------------------------
_FLOOR_MAX_SQUARINGS = 31
_TAYLOR12 = tuple(1.0 / math.factorial(k) for k in range(13))  # exp's Taylor coefficients


def _taylor_parts(x, m=12, p=4):
    """The library's degree-12 Paterson–Stockmeyer evaluation, keeping its intermediates."""
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    powers = [eye, x]
    for _ in range(p - 1):
        powers.append(_dot(powers[-1], x))
    coef = _TAYLOR12

    def block(j):
        return sum((coef[j * p + i] * powers[i] for i in range(1, p)), coef[j * p] * eye)

    horner = [coef[m] * powers[p] + block(m // p - 1)]
    for j in range(m // p - 2, -1, -1):
        horner.append(_dot(horner[-1], powers[p]) + block(j))
    return powers, horner


def _taylor_frechet(powers, horner, coef, e, m=12, p=4):
    """The derivative of the Taylor polynomial at X in direction ``e``, from X's stored powers
    and Horner steps (10 products). With ``powers``/``horner`` conjugate-transposed it is the
    adjoint: ``L_p(X, .)^* = L_p(X^H, .)`` for real coefficients."""
    dpow = [None, e]
    for i in range(2, p + 1):
        dpow.append(_dot(dpow[-1], powers[1]) + _dot(powers[i - 1], e))

    def dblock(j):
        return sum(coef[j * p + i] * dpow[i] for i in range(1, p))

    dt = coef[m] * dpow[p] + dblock(m // p - 1)
    for step, j in enumerate(range(m // p - 2, -1, -1)):
        dt = _dot(dt, powers[p]) + _dot(horner[step], dpow[p]) + dblock(j)
    return dt


def _floor_value(a):
    if a.dtype != jnp.float32 or a.ndim != 2:  # checked here: grad calls _floor_fwd, not the primal
        raise TypeError("the experiment covers one float32 matrix")
    norm = lax.stop_gradient(jnp.max(jnp.sum(jnp.abs(a), axis=0)))
    s = jnp.ceil(jnp.log2(jnp.maximum(norm / 1.46166150721, 1.0))).astype(jnp.int32)
    s = jnp.minimum(s, _FLOOR_MAX_SQUARINGS)
    x = a * jnp.exp2(-s.astype(a.dtype))
    powers, horner = _taylor_parts(x)
    buf = jnp.zeros((_FLOOR_MAX_SQUARINGS,) + a.shape, a.dtype)

    def body(i, carry):
        r, buf = carry
        return _dot(r, r), lax.dynamic_update_index_in_dim(buf, r, i, 0)

    r, buf = lax.fori_loop(0, s, body, (horner[-1], buf))
    return r, (powers, horner, buf, s)


@jax.custom_vjp
def expm_floor(a):
    """``expm`` of one float32 matrix with the library's arithmetic (Taylor degree 12, the same
    scaling, the squarings in a loop of dynamic length) and a ``custom_vjp`` that stores every
    intermediate: the fewest operations a gradient can take with this algorithm (the value's 5
    products + s squarings, then 2 products per squaring and 10 for the polynomial), and no
    ``lax.cond``. Reverse mode only (``jax.jvp`` fails), so not in the library: it is the
    floor the library's ``grad`` is measured against (no Newton–Schulz steps, no symmetric
    renormalisation: the skew benchmark input needs neither for the timing)."""
    return _floor_value(a)[0]


def _floor_fwd(a):
    return _floor_value(a)


def _floor_bwd(res, g):
    powers, horner, buf, s = res

    def body(j, g):  # the adjoint of R <- R @ R, last squaring first
        rt = lax.dynamic_index_in_dim(buf, s - 1 - j, 0, keepdims=False).T
        return _dot(rt, g) + _dot(g, rt)

    g = lax.fori_loop(0, s, body, g)
    dx = _taylor_frechet([q.T for q in powers], [q.T for q in horner], _TAYLOR12, g)
    return (dx * jnp.exp2(-s.astype(g.dtype)),)


expm_floor.defvjp(_floor_fwd, _floor_bwd)


def thetas(u_bits=(24, 53), degrees=(6, 8, 9, 12, 15, 16, 18, 20)):
    """theta_m: the largest ||X||_1 with sum_{k>m} |c_k| theta^(k-1) <= u, c_k the power series
    of log(exp(-x) T_m(x)) (the backward error of the degree-m Taylor polynomial), in 60-digit
    mpmath. The table behind ``parametrax._numerics.linalg._TAYLOR``."""
    import mpmath as mp

    mp.mp.dps = 60
    out = {}
    for m in degrees:
        big = m + 80
        g = [
            mp.fsum(
                (-1) ** i / mp.factorial(i) / mp.factorial(k - i)
                for i in range(max(0, k - m), k + 1)
            )
            for k in range(big)
        ]
        g[0] -= 1  # exp(-x) T_m(x) - 1 = O(x^(m+1))
        series, power = [mp.mpf(0)] * big, [mp.mpf(1)] + [mp.mpf(0)] * (big - 1)
        for j in range(1, big // (m + 1) + 2):  # log(1 + g) = sum (-1)^(j+1) g^j / j
            power = [mp.fsum(power[i] * g[k - i] for i in range(k + 1)) for k in range(big)]
            series = [c + (-1) ** (j + 1) * q / j for c, q in zip(series, power)]
        for bits in u_bits:
            u = mp.mpf(2) ** -bits
            lo, hi = mp.mpf("1e-6"), mp.mpf(20)
            for _ in range(80):
                mid = (lo + hi) / 2
                bound = mp.fsum(abs(series[k]) * mid ** (k - 1) for k in range(m + 1, big))
                lo, hi = (mid, hi) if bound <= u else (lo, mid)
            out[(m, bits)] = float(lo)
    return out


def _best_interleaved(calls, a, reps: int, inner: int) -> list[float]:
    """Microseconds per call of each of ``calls`` on ``a``: the best of ``reps`` rounds, each
    round timing ``inner`` calls of every one in turn (interleaved)."""
    import time

    best = [1e9] * len(calls)
    for _ in range(reps):
        for i, c in enumerate(calls):
            t = time.perf_counter()
            for _ in range(inner):
                r = c(a)
            jax.block_until_ready(r)
            best[i] = min(best[i], (time.perf_counter() - t) / inner * 1e6)
    return best


def compare(sizes=(8, 16, 32, 64), batches=(1, 8), reps=15, inner=10, scale=5.0):
    """Forward and forward+backward time of the three, interleaved (best of ``reps``), on
    skew-symmetric matrices of Frobenius norm ``scale``; ratios against jax.scipy.linalg.expm."""

    import numpy as np

    from parametrax._numerics import expm

    fns = {"jsl": jax.scipy.linalg.expm, "previous": expm_previous, "parametrax": expm}
    print(
        f"{'batch':>5} {'n':>4} | "
        + " | ".join(f"{k} fwd / grad (us)" for k in fns)
        + " | speed-up vs jsl fwd / grad"
    )
    for b in batches:
        for n in sizes:
            rng = np.random.default_rng(n)
            g = rng.standard_normal((b, n, n))
            a = g - np.swapaxes(g, -1, -2)
            a = jnp.asarray(
                a / np.linalg.norm(a, axis=(-2, -1), keepdims=True) * scale, jnp.float32
            )
            w = jnp.asarray(rng.standard_normal(a.shape), jnp.float32)
            calls = [jax.jit(f) for f in fns.values()]
            calls += [
                jax.jit(jax.grad(lambda a, f=f, w=w: jnp.sum(f(a) * w))) for f in fns.values()
            ]
            for c in calls:
                jax.block_until_ready(c(a))
            best = _best_interleaved(calls, a, reps, inner)
            k = len(fns)
            cells = [f"{best[i]:7.1f} / {best[k + i]:7.1f}" for i in range(k)]
            print(
                f"{b:>5} {n:>4} | "
                + " | ".join(cells)
                + f" | {best[0] / best[k - 1]:.2f} / {best[k] / best[2 * k - 1]:.2f}",
                flush=True,
            )


def grad_floor(sizes=(8, 16, 32, 64, 128), reps=15, inner=10, scale=5.0):
    """ONE matrix under ``jax.grad``: jax.scipy.linalg.expm, the library's expm and
    :func:`expm_floor`, interleaved (best of ``reps``), on the skew matrices of :func:`compare`."""

    import numpy as np

    from parametrax._numerics import expm

    fns = {"jsl": jax.scipy.linalg.expm, "parametrax": expm, "floor": expm_floor}
    print(
        f"{'n':>4} | " + " | ".join(f"{k} grad (us)" for k in fns) + " | jsl / parametrax"
        " | jsl / floor | max |grad - jsl grad|"
    )
    for n in sizes:
        rng = np.random.default_rng(n)
        g = rng.standard_normal((n, n))
        a = jnp.asarray((g - g.T) / np.linalg.norm(g - g.T) * scale, jnp.float32)
        w = jnp.asarray(rng.standard_normal(a.shape), jnp.float32)
        calls = [jax.jit(jax.grad(lambda a, f=f, w=w: jnp.sum(f(a) * w))) for f in fns.values()]
        outs = [jax.block_until_ready(c(a)) for c in calls]
        err = max(float(jnp.max(jnp.abs(o - outs[0]))) for o in outs[1:])
        best = _best_interleaved(calls, a, reps, inner)
        print(
            f"{n:>4} | "
            + " | ".join(f"{b:7.1f}" for b in best)
            + f" | {best[0] / best[1]:.2f} | {best[0] / best[2]:.2f} | {err:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    # OPENBLAS_NUM_THREADS=1 python benchmarks/expm_variants.py [--theta | --floor]
    import sys

    if "--theta" in sys.argv[1:]:
        for (m, bits), th in thetas().items():
            print(f"m = {m:2d}  u = 2^-{bits}: theta = {th:.12g}")
    elif "--floor" in sys.argv[1:]:
        grad_floor()
    else:
        compare()
