"""Re-measures the figures of the docs' "Numerical tolerances" section over their whole stated
range (issue 16: every tolerance claim measured, none copied).

Run:  OPENBLAS_NUM_THREADS=1 python benchmarks/tolerances.py            # ~1 min on 2 cores
      JAX_ENABLE_X64=1 OPENBLAS_NUM_THREADS=1 python benchmarks/tolerances.py   # adds float64

For every n in 1..16 and raw skew matrices of Frobenius norm spread log-uniformly over
[1e-2, 10 n] (20 seeds per (n, norm)), it reports the worst:

* orthogonality error max|QᵀQ − I| of [skew, cayley] and [skew, matrix_exp];
* round-trip error max|forward(right_inverse(Q)) − Q| of [skew, cayley] (Q = forward(raw));

then the growth of the matrix_exp error with huge norms (float32) and the first norm at which
it is no longer finite. Errors are measured in float64 numpy from the dtype's output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import parametrax as px

DTYPES = [jnp.bfloat16, jnp.float16, jnp.float32] + (
    [jnp.float64] if jax.config.jax_enable_x64 else []
)


def orth_err(q) -> float:
    q = np.asarray(q, np.float64)
    k = q.shape[-1]
    return float(np.max(np.abs(np.swapaxes(q, -1, -2) @ q - np.eye(k))))


def raws(n: int, dtype, seeds: int = 20) -> np.ndarray:
    rng = np.random.default_rng(n)
    norms = np.exp(rng.uniform(np.log(1e-2), np.log(10 * n), seeds))
    x = rng.standard_normal((seeds, n, n))
    a = np.triu(x, 1) - np.swapaxes(np.triu(x, 1), -1, -2)
    f = np.linalg.norm(a, axis=(-2, -1), keepdims=True)
    f = np.where(f == 0, 1.0, f)
    return (np.triu(x, 1) * (norms[:, None, None] / f)).astype(np.float32)  # triu: Skew's raw


def main() -> None:
    cayley = jax.jit(lambda x: px.cayley(px.skew(x)))
    expm = jax.jit(lambda x: px.matrix_exp(px.skew(x)))
    inverse = jax.jit(lambda q: px.skew.right_inverse(px.cayley.right_inverse(q)))
    print(
        "dtype     | orth [skew,cayley] | orth [skew,matrix_exp] | round trip [skew,cayley] (refused)"
    )
    for dtype in DTYPES:
        worst = [0.0, 0.0, 0.0]
        refused = 0
        for n in range(1, 17):
            x = jnp.asarray(raws(n, dtype), dtype)
            q = cayley(x)
            worst[0] = max(worst[0], orth_err(q))
            worst[1] = max(worst[1], orth_err(expm(x)))
            back = np.asarray(cayley(inverse(q)), np.float64)
            # Under jit a matrix Cayley cannot represent (eigenvalue within rounding of -1: its
            # inverse is past 1/sqrt(eps)) comes back NaN; eagerly it is a RightInverseError.
            ok = np.all(np.isfinite(back), axis=(-2, -1))
            refused += int(np.sum(~ok))
            diff = np.abs(back[ok] - np.asarray(q, np.float64)[ok])
            worst[2] = max(worst[2], float(np.max(diff)) if diff.size else 0.0)
        name = jnp.dtype(dtype).name
        print(
            f"{name:9} | {worst[0]:18.1e} | {worst[1]:22.1e} | {worst[2]:.1e}"
            f"  ({refused} of {16 * 20} refused)"
        )

    print("\nhuge norms, float32, 8x8, 3 seeds: max orthogonality error")
    rng = np.random.default_rng(0)
    first_nan = None
    for norm in [1e2, 1e3, 1e4, 1e5, 3.5e5, 5e5, 1e6, 1e7, 1e8, 1e9]:
        x = rng.standard_normal((3, 8, 8))
        a = np.triu(x, 1) - np.swapaxes(np.triu(x, 1), -1, -2)
        x = (np.triu(x, 1) * norm / np.linalg.norm(a, axis=(-2, -1), keepdims=True)).astype(
            np.float32
        )
        e_exp, e_cay = orth_err(expm(jnp.asarray(x))), orth_err(cayley(jnp.asarray(x)))
        finite = bool(np.all(np.isfinite(np.asarray(expm(jnp.asarray(x))))))
        if not finite and first_nan is None:
            first_nan = norm
        print(f"  |X|_F = {norm:8.1e}: matrix_exp {e_exp:.1e}  cayley {e_cay:.1e}  finite={finite}")
    print(f"first non-finite matrix_exp norm tried: {first_nan}")


if __name__ == "__main__":
    main()
