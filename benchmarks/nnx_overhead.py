"""Python overhead of the NNX front: one ``nnx.jit`` training step and one eager read.

Run from the repository root (``PYTHONPATH=src`` to time a working tree)::

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/nnx_overhead.py [--layers 20]

Workloads (32x32 layers, batch 8, so the arithmetic is negligible and Python dominates):

* ``plain``: a ``--layers``-deep MLP of ``nnx.Linear``, ``nnx.jit`` step with ``nnx.Optimizer``.
* ``parametrized``: the same MLP with every kernel under ``WeightNorm``.
* ``parametrized+cached_partial``: the same step through ``nnx.cached_partial``.
* ``eager read``: ``layer.kernel`` of one WeightNorm-parametrized layer outside any trace.

Timings are interleaved (round k runs every workload) and the figure is the median over rounds
of the mean time per call within a round; ratios are against ``plain``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import parametrax as px
from parametrax import nnx as pnnx


class MLP(nnx.Module):
    def __init__(self, layers: int, width: int, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(layers)])

    def __call__(self, x):
        for layer in self.layers:
            x = jnp.tanh(layer(x))
        return x


def make(layers: int, width: int, parametrize: bool):
    model = MLP(layers, width, nnx.Rngs(0))
    if parametrize:
        for layer in model.layers:
            pnnx.register_parametrization(layer, "kernel", px.WeightNorm())
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    return model, optimizer


def loss_fn(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    x = jax.random.normal(jax.random.key(1), (8, args.width))
    y = jax.random.normal(jax.random.key(2), (8, args.width))

    runs = {}
    model, opt = make(args.layers, args.width, False)
    runs["plain"] = lambda m=model, o=opt: train_step(m, o, x, y).block_until_ready()
    model, opt = make(args.layers, args.width, True)
    runs["parametrized"] = lambda m=model, o=opt: train_step(m, o, x, y).block_until_ready()
    model, opt = make(args.layers, args.width, True)
    cached = nnx.cached_partial(train_step, model, opt)
    runs["parametrized+cached_partial"] = lambda: cached(x, y).block_until_ready()
    layer = nnx.Linear(args.width, args.width, rngs=nnx.Rngs(3))
    pnnx.register_parametrization(layer, "kernel", px.WeightNorm())
    runs["eager read (1 layer)"] = lambda: layer.kernel.block_until_ready()
    kernel_fn = jax.jit(lambda g, v: px.WeightNorm().forward(g, v))
    pl = layer.parametrizations.kernel
    runs["jitted map (1 layer, reference)"] = lambda: kernel_fn(
        pl.original0[...], pl.original1[...]
    ).block_until_ready()

    for f in runs.values():  # compile and warm up
        for _ in range(3):
            f()
    times = {k: [] for k in runs}
    names = list(runs)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            for _ in range(args.calls):
                runs[k]()
            times[k].append((time.perf_counter() - t0) / args.calls)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain"]
    print(f"backend {jax.default_backend()}, {args.layers} layers of {args.width}x{args.width}")
    for k, v in med.items():
        extra = ""
        if k.startswith("parametrized"):
            extra = f"  (+{(v - base) / args.layers * 1e6:.0f} us per layer)"
        print(f"{k:34s} {v * 1e3:8.3f} ms  x{v / base:5.2f} vs plain{extra}")


if __name__ == "__main__":
    main()
