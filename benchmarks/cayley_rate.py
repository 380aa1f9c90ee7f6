"""The Cayley map against the matrix-product rate (issue 15.4): before and after.

Run:  python benchmarks/cayley_rate.py                 # n = 64, 256, 512, 1024; < 2 min
      python benchmarks/cayley_rate.py --sizes 256 512 --rounds 15

``OPENBLAS_NUM_THREADS=1`` is set before JAX is imported (LAPACK's LU and triangular solves
with OpenBLAS's default threads are 2-8x slower on a shared CPU; see benchmarks/blas_threads.py).

Reference: one ``n x n`` matrix product (2 n^3 flops), timed in the same process, interleaved
with the maps. The *fraction of the matmul rate* of a computation that ideally costs k products
is ``k * t_matmul / t``: k = 1 for the forward (an inverse is 2 n^3 flops) and k = 3 for the
forward and backward together (plus the two products of the backward rule ``1/2 (I+Q)^T G
(I+Q)^T``). Every variant uses that same derivative; they differ in how the value is formed:

* ``before``: ``Q = (I - X)^{-1} (I + X)`` by one ``jnp.linalg.solve`` (LU + two triangular
  solves with n right-hand sides: 8/3 n^3 flops), the library's form when issue 15.4 was
  opened, kept here as a private reference;
* ``inv``: ``Q = 2 (I - X)^{-1} - I`` with ``jnp.linalg.inv`` (which is itself ``solve(A, I)``
  in JAX: the same 8/3 n^3);
* ``lu_inverse``: ``Q = 2 (I - X)^{-1} - I`` with the inverse from one LU
  (``lax.linalg.lu``), recursive blocked triangular inversions and one triangular product,
  arranged as LAPACK's ``getri`` (2 n^3 flops, all but the LU and 128 x 128 diagonal blocks in
  matrix products): the single-inverse candidate of issue 15.4, kept here because it measured
  no faster (``benchmarks/results.md``);
* ``library``: ``parametrax._numerics.cayley_map`` as it is now.

``--accuracy`` instead measures the ``before``, ``inv`` and ``lu_inverse`` values over the range of
``benchmarks/tolerances.py`` (float32; block size 2 so that the recursion runs at n <= 16):
orthogonality, round trip through ``px.cayley.right_inverse``, distance to float64 numpy.

Each round times every function (best of ``--calls`` calls); the figure is the median over
rounds of the per-round ratio to the matmul of that round (robust to a shared machine's load).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

import parametrax as px  # noqa: E402
from parametrax._numerics import linalg  # noqa: E402

HIGHEST = lax.Precision.HIGHEST


def _eye(x):
    return jnp.broadcast_to(jnp.eye(x.shape[-1], dtype=x.dtype), x.shape)


@jax.custom_jvp
def _cayley_before(x):
    """The library's Cayley map before issue 15.4 (value by one solve, same derivative)."""
    eye = _eye(x)
    return jnp.linalg.solve(eye - x, eye + x)


@_cayley_before.defjvp
def _cayley_before_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    q = _cayley_before(x)
    p = q + _eye(q)
    return q, 0.5 * jnp.matmul(jnp.matmul(p, dx, precision=HIGHEST), p, precision=HIGHEST)


def _mm(u, v):
    return jnp.matmul(u, v, precision=HIGHEST)


def _cat(rows):
    return jnp.concatenate([jnp.concatenate(r, axis=-1) for r in rows], axis=-2)


def _triangular_inverse(t, lower, unit, block):
    """Inverse of the lower (unit) or upper triangle of ``t``, halves inverted recursively."""
    n = t.shape[-1]
    if n <= block:
        return lax.linalg.triangular_solve(
            t, _eye(t), left_side=True, lower=lower, unit_diagonal=unit
        )
    h = n // 2
    a = _triangular_inverse(t[..., :h, :h], lower, unit, block)
    b = _triangular_inverse(t[..., h:, h:], lower, unit, block)
    if lower:  # [[A, 0], [C, B]]^-1 = [[A^-1, 0], [-B^-1 C A^-1, B^-1]]
        c = -_mm(b, _mm(t[..., h:, :h], a))
        return _cat([[a, jnp.zeros(t.shape[:-2] + (h, n - h), t.dtype)], [c, b]])
    c = -_mm(a, _mm(t[..., :h, h:], b))
    return _cat([[a, c], [jnp.zeros(t.shape[:-2] + (n - h, h), t.dtype), b]])


def _upper_times_lower(u, l, block):
    """``u @ l`` for triangular ``u`` (upper) and ``l`` (lower), zero blocks skipped (n^3)."""
    n = u.shape[-1]
    if n <= block:
        return _mm(u, l)
    h = n // 2
    u11, u12, u22 = u[..., :h, :h], u[..., :h, h:], u[..., h:, h:]
    l11, l21, l22 = l[..., :h, :h], l[..., h:, :h], l[..., h:, h:]
    return _cat(
        [
            [_upper_times_lower(u11, l11, block) + _mm(u12, l21), _mm(u12, l22)],
            [_mm(u22, l21), _upper_times_lower(u22, l22, block)],
        ]
    )


def _lu_inverse(a, block=128):
    """``a^{-1} = U^{-1} L^{-1} P`` from ``a[perm] = L U`` (batched)."""
    lu, _, perm = lax.linalg.lu(a)
    z = _upper_times_lower(
        _triangular_inverse(lu, False, False, block),
        _triangular_inverse(lu, True, True, block),
        block,
    )
    return jnp.take_along_axis(z, jnp.argsort(perm, axis=-1)[..., None, :], axis=-1)


def _with_cayley_rule(value):
    """``value`` (a Cayley map) with the library's derivative ``1/2 (I + Q) dX (I + Q)``."""
    f = jax.custom_jvp(value)

    @f.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        q = f(x)
        p = q + _eye(q)
        return q, 0.5 * _mm(_mm(p, dx), p)

    return f


_cayley_inv = _with_cayley_rule(lambda x: 2 * jnp.linalg.inv(_eye(x) - x) - _eye(x))
_cayley_lu_inverse = _with_cayley_rule(lambda x: 2 * _lu_inverse(_eye(x) - x) - _eye(x))


VARIANTS = {
    "before": _cayley_before,
    "inv": _cayley_inv,
    "lu_inverse": _cayley_lu_inverse,
    "library": linalg.cayley_map,
}


def _best(f, x, calls):
    best = float("inf")
    for _ in range(calls):
        t = time.perf_counter()
        jax.block_until_ready(f(x))
        best = min(best, time.perf_counter() - t)
    return best


def measure(n: int, rounds: int, calls: int) -> dict:
    rng = np.random.default_rng(n)
    g = rng.standard_normal((n, n))
    x = jnp.asarray((g - g.T) / np.sqrt(n), jnp.float32)  # skew, spectral norm ~ 2
    w = jnp.asarray(rng.standard_normal((n, n)), jnp.float32)
    fns = {"matmul": jax.jit(lambda x: jnp.matmul(x, x, precision=HIGHEST))}
    for name, f in VARIANTS.items():
        fns[f"{name} fwd"] = jax.jit(f)
        fns[f"{name} fwd+bwd"] = jax.jit(jax.grad(lambda x, f=f: jnp.sum(f(x) * w)))
    for f in fns.values():
        jax.block_until_ready(f(x))
    ratios = {k: [] for k in fns if k != "matmul"}
    times = {k: [] for k in fns}
    for _ in range(rounds):
        t = {k: _best(f, x, calls) for k, f in fns.items()}
        for k, v in t.items():
            times[k].append(v)
        for k in ratios:
            ratios[k].append((3 if "bwd" in k else 1) * t["matmul"] / t[k])
    out = {"matmul_ms": 1e3 * statistics.median(times["matmul"])}
    for k, r in ratios.items():
        out[k] = statistics.median(r)
        out[k + " ms"] = 1e3 * statistics.median(times[k])
    return out


def accuracy() -> None:
    """Worst errors of ``before``, ``inv`` and ``lu_inverse`` (block 2) over tolerances.py's range."""
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "tolerances", pathlib.Path(__file__).with_name("tolerances.py")
    )
    tol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tol)
    forms = {
        "before": jax.jit(lambda x: _cayley_before(px.skew(x))),
        "inv": jax.jit(lambda x: _cayley_inv(px.skew(x))),
        "lu_inverse": jax.jit(lambda x: 2 * _lu_inverse(_eye(x) - px.skew(x), 2) - _eye(x)),
    }
    inverse = jax.jit(lambda q: px.skew.right_inverse(px.cayley.right_inverse(q)))
    print("float32, n = 1..16, raw norms 1e-2..10 n (20 seeds): worst over the range")
    print("| form | orthogonality | round trip | vs float64 numpy |\n|---|---|---|---|")
    for name, f in forms.items():
        worst = [0.0, 0.0, 0.0]
        for n in range(1, 17):
            raw = tol.raws(n, jnp.float32)
            q = f(jnp.asarray(raw))
            a = np.triu(raw.astype(np.float64), 1)
            a = a - np.swapaxes(a, -1, -2)
            ref = np.linalg.solve(np.eye(n) - a, np.eye(n) + a)
            back = np.asarray(f(inverse(q)), np.float64)
            ok = np.all(np.isfinite(back), axis=(-2, -1))
            worst[0] = max(worst[0], tol.orth_err(q))
            worst[1] = max(worst[1], float(np.max(np.abs(back[ok] - np.asarray(q)[ok]), initial=0)))
            worst[2] = max(worst[2], float(np.max(np.abs(np.asarray(q, np.float64) - ref))))
        print(f"| {name} | {worst[0]:.1e} | {worst[1]:.1e} | {worst[2]:.1e} |")
    rng = np.random.default_rng(0)
    print("\nhuge norms, 64x64 skew (block 16), orthogonality: before / inv / lu_inverse")
    for norm in [1e2, 1e4, 1e6, 1e9]:
        g = rng.standard_normal((3, 64, 64))
        a = g - np.swapaxes(g, -1, -2)
        x = jnp.asarray(a * norm / np.linalg.norm(a, axis=(-2, -1), keepdims=True), jnp.float32)
        e0 = tol.orth_err(jax.jit(_cayley_before)(x))
        ei = tol.orth_err(jax.jit(_cayley_inv)(x))
        e1 = tol.orth_err(jax.jit(lambda x: 2 * _lu_inverse(_eye(x) - x, 16) - _eye(x))(x))
        print(f"  |X|_F = {norm:.0e}: {e0:.1e} / {ei:.1e} / {e1:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512, 1024])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--accuracy", action="store_true", help="errors instead of timings")
    args = ap.parse_args()
    if args.accuracy:
        accuracy()
        return
    print(
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, float32, "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    print("fraction of the matmul rate (k * t_matmul / t), median over rounds; ms in brackets\n")
    names = list(VARIANTS)
    head = " | ".join(f"{v} fwd | {v} fwd+bwd" for v in names)
    print(f"| n | matmul ms | {head} |")
    print("|---" * (2 + 2 * len(names)) + "|")
    for n in args.sizes:
        r = measure(n, args.rounds, args.calls)
        cells = " | ".join(
            f"{100 * r[f'{v} {p}']:.0f} % ({r[f'{v} {p} ms']:.2f})"
            for v in names
            for p in ("fwd", "fwd+bwd")
        )
        print(f"| {n} | {r['matmul_ms']:.2f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
