"""OpenBLAS's default thread pool against one thread, on a small LU-based map (Cayley).

    python benchmarks/blas_threads.py [--rounds 5]

Each round starts two fresh processes, one with ``OPENBLAS_NUM_THREADS`` unset (OpenBLAS's
default: one thread per core) and one with ``OPENBLAS_NUM_THREADS=1``, in an order alternating
from round to round; each times ``parametrax.cayley`` of a skew n x n matrix eagerly and under
``jax.jit`` (n = 32 and 256; median over calls). The figure is the median over rounds of the
per-round ratio default / one thread (paired, as in ``run.py``). The variable only matters
where OpenBLAS does the work: JAX's CPU LU and triangular solves call LAPACK through it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = [(mode, n) for n in (32, 256) for mode in ("eager", "jit")]


def child() -> None:
    import jax  # noqa: PLC0415

    import parametrax as px  # noqa: PLC0415

    out = {}
    for mode, n in CASES:
        a = jax.random.normal(jax.random.key(0), (n, n)) / n
        a = a - a.T
        f = jax.jit(px.cayley) if mode == "jit" else px.cayley
        jax.block_until_ready(f(a))  # compile / warm up
        calls = 200 if n == 32 else 20
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                jax.block_until_ready(f(a))
            ts.append((time.perf_counter() - t0) / calls)
        out[f"{mode} {n}x{n}"] = statistics.median(ts)
    print(json.dumps(out), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child()
        return 0
    settings = {"default": None, "1 thread": "1"}
    samples = {s: [] for s in settings}
    for r in range(args.rounds):
        order = list(settings) if r % 2 == 0 else list(settings)[::-1]
        for s in order:
            env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
            if settings[s] is not None:
                env["OPENBLAS_NUM_THREADS"] = settings[s]
            proc = subprocess.run(
                [sys.executable, __file__, "--child"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            samples[s].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, {args.rounds} rounds")
    print("| map | default threads ms | 1 thread ms | default / 1 thread |")
    print("|---|---:|---:|---:|")
    for case in samples["default"][0]:
        d = [x[case] for x in samples["default"]]
        o = [x[case] for x in samples["1 thread"]]
        ratio = statistics.median(a / b for a, b in zip(d, o))
        print(
            f"| Cayley {case} | {statistics.median(d) * 1e3:.3f} | "
            f"{statistics.median(o) * 1e3:.3f} | {ratio:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
