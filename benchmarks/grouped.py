"""Grouped evaluation across variables: one batched map for L equal chains, against L maps.

Run from the repository root (``PYTHONPATH=src`` to time a working tree)::

    PYTHONPATH=src python benchmarks/grouped.py            # small default, ~3 min on 2 idle cores
    PYTHONPATH=src python benchmarks/grouped.py --full     # L in {1, 8, 32, 64}, n in {64, 256}

Workload: an MLP of ``L`` ``Dense(n)`` layers (tanh), batch 32, every kernel
``Orthogonal(map=...)`` (trivialization on: a base point per layer as state) through
``parametrax.Parametrized(MLP, {"**/kernel": ...}, group=...)``; one jitted Adam step
(``value_and_grad`` of a squared loss, the optax update). ``group=True`` stacks the L raw
kernels and bases and evaluates the chain once (``parametrax.tree._grouping``); ``group=False``
evaluates each kernel alone (what parametrax did before grouping).

* **step**: interleaved paired ratios. Each round times a few steps of both variants, in an
  order that alternates between rounds; the figure is the median over rounds of
  ``grouped / ungrouped`` (each round's mean step time), with the median step times.
* **compile**: trace + lower + compile of the step, a fresh ``jax.jit`` each time, the two
  variants alternated (the first sample of each is the compile the step timing uses); the
  median over repeats of each, and their ratio; in wall-clock seconds and in CPU seconds of
  the process (``time.process_time``: steadier on a shared machine, where wall-clock
  compile times stretch with the load).

``OPENBLAS_NUM_THREADS=1`` is set before JAX is imported (LU-based maps with OpenBLAS's
default threads are 2-8x slower on a shared CPU). ``group=True`` groups only where
``parametrax.tree._grouping.worth_grouping`` says it pays (a matrix exponential, n <= 128);
this script replaces that rule by "two or more variables" so that every row is measured
grouped (``--no-force`` measures the default rule instead).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import parametrax as px  # noqa: E402
from parametrax.tree import _grouping  # noqa: E402


class MLP(nn.Module):
    layers: int
    width: int

    @nn.compact
    def __call__(self, x):
        for _ in range(self.layers):
            x = jnp.tanh(nn.Dense(self.width)(x))
        return x


def make_step(layers: int, n: int, map_: str, group: bool, batch: int = 32):
    """``(step_fn, args)``: a fresh jitted Adam step and its arguments."""
    model = px.Parametrized(MLP, {"**/kernel": px.Orthogonal(map=map_)}, group=group)(
        layers=layers, width=n
    )
    x = jax.random.normal(jax.random.key(0), (batch, n))
    y = jax.random.normal(jax.random.key(1), (batch, n))
    variables = model.init(jax.random.key(2), x)
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    opt = optax.adam(1e-3)

    def loss(p, rest, x, y):
        return jnp.mean((model.apply({"params": p, **rest}, x) - y) ** 2)

    def step(p, s, rest, x, y):
        value, grads = jax.value_and_grad(loss)(p, rest, x, y)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    return jax.jit(step), (params, opt.init(params), rest, x, y)


def compile_seconds(layers: int, n: int, map_: str, group: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of trace + lower + compile. CPU time (``time.process_time``, all
    threads) is the steadier figure on a shared machine: it does not count waiting for a core."""
    fn, args = make_step(layers, n, map_, group)
    t0, c0 = time.perf_counter(), time.process_time()
    fn.lower(*args).compile()
    return time.perf_counter() - t0, time.process_time() - c0


def timed_steps(compiled, args, steps: int) -> float:
    p, s, rest, x, y = args
    t0 = time.perf_counter()
    for _ in range(steps):
        p, s, v = compiled(p, s, rest, x, y)
    jax.block_until_ready(v)
    return (time.perf_counter() - t0) / steps


def measure(layers: int, n: int, map_: str, rounds: int, steps: int, compiles: int) -> dict:
    variants, comp, ccpu = {}, {True: [], False: []}, {True: [], False: []}
    for group in (True, False):  # the first compile of each variant is a compile sample too
        fn, args = make_step(layers, n, map_, group)
        t0, c0 = time.perf_counter(), time.process_time()
        compiled = fn.lower(*args).compile()
        comp[group].append(time.perf_counter() - t0)
        ccpu[group].append(time.process_time() - c0)
        timed_steps(compiled, args, 2)  # warm-up
        variants[group] = (compiled, args)
    a, b = variants[True][0](*variants[True][1]), variants[False][0](*variants[False][1])
    loss_diff = abs(float(a[2]) - float(b[2]))
    ratios, times = [], {True: [], False: []}
    for r in range(rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        got = {g: timed_steps(*variants[g], steps) for g in order}
        for g in got:
            times[g].append(got[g])
        ratios.append(got[True] / got[False])
    for r in range(1, compiles):
        for g in (False, True) if r % 2 == 1 else (True, False):
            wall, cpu = compile_seconds(layers, n, map_, g)
            comp[g].append(wall)
            ccpu[g].append(cpu)
    cg, cu = statistics.median(comp[True]), statistics.median(comp[False])
    pg, pu = statistics.median(ccpu[True]), statistics.median(ccpu[False])
    return {
        "grouped_ms": 1e3 * statistics.median(times[True]),
        "ungrouped_ms": 1e3 * statistics.median(times[False]),
        "step_ratio": statistics.median(ratios),
        "step_ratio_range": (min(ratios), max(ratios)),
        "compile_grouped_s": cg,
        "compile_ungrouped_s": cu,
        "compile_ratio": cg / cu,
        "compile_cpu_grouped_s": pg,
        "compile_cpu_ungrouped_s": pu,
        "compile_cpu_ratio": pg / pu,
        "loss_diff": loss_diff,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="L in {1,8,32,64}, n in {64,256}")
    ap.add_argument("--layers", type=int, nargs="*", help="override the layer counts")
    ap.add_argument("--n", type=int, nargs="*", help="override the widths")
    ap.add_argument("--maps", nargs="*", default=["cayley", "matrix_exp"])
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--compiles", type=int, default=None)
    ap.add_argument("--no-force", action="store_true", help="keep the default grouping rule")
    args = ap.parse_args()
    layers = args.layers or ([1, 8, 32, 64] if args.full else [1, 8, 32])
    widths = args.n or ([64, 256] if args.full else [64])
    rounds = args.rounds or (15 if args.full else 7)
    steps = args.steps or (10 if args.full else 5)
    compiles = args.compiles or (3 if args.full else 1)
    if not args.no_force:
        _grouping.worth_grouping = lambda chain, count, shape: count >= 2
    print(
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, rounds {rounds} x "
        f"{steps} steps, {compiles} compile(s) each, grouping rule "
        f"{'forced (any two)' if not args.no_force else 'default'}"
    )
    print(
        "| map | n | L | grouped ms | ungrouped ms | step ratio (range) | compile grouped s "
        "| compile ungrouped s | compile ratio | compile CPU s grouped / ungrouped (ratio) "
        "| loss diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for map_ in args.maps:
        for n in widths:
            for L in layers:
                m = measure(L, n, map_, rounds, steps, compiles)
                lo, hi = m["step_ratio_range"]
                print(
                    f"| {map_} | {n} | {L} | {m['grouped_ms']:.2f} | {m['ungrouped_ms']:.2f} | "
                    f"{m['step_ratio']:.2f} ({lo:.2f}-{hi:.2f}) | {m['compile_grouped_s']:.2f} | "
                    f"{m['compile_ungrouped_s']:.2f} | {m['compile_ratio']:.2f} | "
                    f"{m['compile_cpu_grouped_s']:.2f} / {m['compile_cpu_ungrouped_s']:.2f} "
                    f"({m['compile_cpu_ratio']:.2f}) | "
                    f"{m['loss_diff']:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
