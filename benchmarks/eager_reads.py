"""Eager reads of a parametrized 256x256 kernel: op by op (before) against one compiled call.

Run from the repository root (``PYTHONPATH=src`` to time a working tree)::

    PYTHONPATH=src python benchmarks/eager_reads.py            # ~1 min on 2 idle cores
    PYTHONPATH=src python benchmarks/eager_reads.py --n 64 --rounds 5

For ``WeightNorm()``, ``SpectralNorm()`` and ``Orthogonal(map="cayley")`` on an ``n x n`` kernel,
each read is timed (``block_until_ready``) through two fronts:

* **nnx**: ``layer.kernel`` on a parametrized ``nnx.Linear(n, n)`` in its default (train) mode,
  so a spectral norm read advances its ``u``, ``v``, as in torch;
* **tree**: ``px.tree.constrain(spec, raw, state)``;

in three variants, interleaved (each round times ``reads`` reads of each variant, the order
alternating between rounds; the figure is the median over rounds of each round's mean):

* **ops**: op-by-op evaluation, what every eager read did before (``_core._op_by_op()``);
* **eager**: today's eager read, one compiled call of the chain;
* **jit**: the jitted map, ``jax.jit(lambda raw, state: px.tree.constrain(spec, raw, state))``
  (for nnx: the same map with ``update_state=True``, as a train-mode read computes it, on raw
  arrays: no ``nnx.jit`` overhead, no state written back).

Printed: the median times (µs) and the ratios ``ops / eager`` (the speed-up) and
``eager / jit`` (how far an eager read is from the jitted map). ``OPENBLAS_NUM_THREADS=1`` is set
before JAX is imported. ``--clock cpu`` times the process's CPU time (``time.process_time``: every
thread of this process, XLA's included, and none of the other processes sharing the machine)
instead of wall-clock time: steadier on a loaded machine.

``--gap US`` spins US µs of Python before every read of every variant (and subtracts the spin's
own time, measured in the same round): reads as a program makes them, with other work in between,
instead of back to back. Back to back flatters the jitted map: XLA's CPU worker threads are still
awake from the previous call, and after even ~10 µs of other Python they must be woken again,
which costs the next call ~20-40 µs at n = 32-128 on this machine (results.md, "Eager reads:
where they stand").
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import parametrax as px  # noqa: E402
import parametrax.nnx as pnnx  # noqa: E402
from parametrax import _core  # noqa: E402

MAPS = {
    "WeightNorm": lambda: px.WeightNorm(),
    "SpectralNorm": lambda: px.SpectralNorm(),
    "Orthogonal(cayley)": lambda: px.Orthogonal(map="cayley"),
}


def _variants(front: str, p, n: int):
    """``{variant: read}`` for one map and front; each read returns the value."""
    kernel = jax.random.normal(jax.random.key(0), (n, n)) / np.sqrt(n)
    spec = {"w": p}
    raw, state = px.tree.register(spec, {"w": kernel}, key=jax.random.key(1))
    update = front == "nnx"  # an NNX layer reads in train mode: stateful maps advance
    jitted = jax.jit(lambda r, s: px.tree.forward(spec, r, s, update_state=update)[0])
    if front == "tree":

        def read():
            return px.tree.constrain(spec, raw, state)["w"]
    else:
        layer = nnx.Linear(n, n, rngs=nnx.Rngs(0))
        pnnx.register_parametrization(layer, "kernel", p, rngs=nnx.Rngs(1))

        def read():
            return layer.kernel

    def ops():
        with _core._op_by_op():
            return read()

    return {"ops": ops, "eager": read, "jit": lambda: jitted(raw, state)["w"]}


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _busy(seconds: float) -> None:
    """Spins for ``seconds`` (other Python work between two reads)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _time(fn, reads: int, clock=time.perf_counter, gap: float = 0.0) -> float:
    start = clock()
    for _ in range(reads):
        if gap:
            _busy(gap)
        jax.block_until_ready(fn())
    return (clock() - start) / reads


def measure(
    front: str, name: str, n: int, rounds: int, reads: int, clock: str = "wall", gap: float = 0.0
) -> dict:
    fns = _variants(front, MAPS[name](), n)
    for fn in fns.values():  # compile and warm every variant first
        jax.block_until_ready(fn())
        jax.block_until_ready(fn())
    samples: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for r in range(rounds):
        for k in order if r % 2 == 0 else order[::-1]:
            samples[k].append(_time(fns[k], reads, CLOCKS[clock], gap))
        if gap:  # the spin's own time, measured in the same round and subtracted from every read
            spin = _time(lambda: None, reads, CLOCKS[clock], gap)
            for k in order:
                samples[k][-1] -= spin
    med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    ratio_ops = statistics.median(o / e for o, e in zip(samples["ops"], samples["eager"]))
    ratio_jit = statistics.median(e / j for e, j in zip(samples["eager"], samples["jit"]))
    return {**med, "ops/eager": ratio_ops, "eager/jit": ratio_jit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--reads", type=int, default=20)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    ap.add_argument("--fronts", default="nnx,tree")
    ap.add_argument("--maps", default=",".join(MAPS))
    ap.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="µs of other Python (a spin) before every read, subtracted from the times",
    )
    args = ap.parse_args()
    print(
        f"jax {jax.__version__}, {jax.devices()[0].platform}, n = {args.n}, "
        f"{args.rounds} rounds x {args.reads} reads, {args.clock} clock, gap {args.gap:g} µs"
    )
    print("| front | map | ops µs | eager µs | jit µs | ops / eager | eager / jit |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for front in args.fronts.split(","):
        for name in args.maps.split(","):
            m = measure(front, name, args.n, args.rounds, args.reads, args.clock, args.gap * 1e-6)
            print(
                f"| {front} | {name} | {m['ops']:.0f} | {m['eager']:.0f} | {m['jit']:.0f} "
                f"| {m['ops/eager']:.2f} | {m['eager/jit']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
