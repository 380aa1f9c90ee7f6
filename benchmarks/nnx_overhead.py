"""Python overhead of the NNX front: one ``nnx.jit`` training step and one eager read.

Run from the repository root (``PYTHONPATH=src`` to time a working tree)::

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/nnx_overhead.py [--layers 20]

Workloads (32x32 layers, batch 8, so the arithmetic is negligible and Python dominates):

* ``plain``: a ``--layers``-deep MLP of ``nnx.Linear``, ``nnx.jit`` step with ``nnx.Optimizer``.
* ``hand-written g, v``: the same MLP of a hand-written weight-normalised layer holding ``g``,
  ``v`` and ``bias`` as plain ``nnx.Param`` attributes: the same Variables (and optimizer slots)
  as the parametrized model, so the floor any parametrized layer could reach.
* ``parametrized``: the plain MLP with every kernel under ``WeightNorm`` (``nnx.jit`` step).
* ``parametrized, nnx.jit(graph=False)``: the same step in NNX's tree mode, where the flax in use
  has it (flax >= 0.12.x).
* ``parametrized+cached_partial``: the same step through ``nnx.cached_partial``.
* ``parametrized, split + jax.jit``: ``nnx.split`` once, a ``jax.jit`` step of ``(graphdef,
  state)`` that ``nnx.merge``-s inside and returns the new state.
* ``eager read``: ``layer.kernel`` of one WeightNorm-parametrized layer outside any trace.

Timings are interleaved (round k runs every workload) and the figure is the median over rounds
of the mean time per call within a round; ratios and "us per layer" are against ``plain``.
``--clock thread`` times the calling thread's CPU time instead of the wall clock: the per-step
Python cost this benchmark is about, less sensitive to other processes on a shared machine.
The last recorded figures (before / after the lean containers) are in ``nnx_overhead.txt``.
"""

from __future__ import annotations

import argparse
import functools
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


class WNLinear(nnx.Module):
    """A hand-written weight-normalised Linear: ``g``, ``v``, ``bias`` as plain Params."""

    def __init__(self, width: int, rngs: nnx.Rngs):
        v = nnx.initializers.lecun_normal()(rngs.params(), (width, width))
        self.v = nnx.Param(v)
        self.g = nnx.Param(jnp.linalg.norm(v, axis=0, keepdims=True))
        self.bias = nnx.Param(jnp.zeros((width,)))

    def __call__(self, x):
        v = self.v[...]
        return x @ (self.g[...] * v / jnp.linalg.norm(v, axis=0, keepdims=True)) + self.bias[...]


class HandMLP(MLP):
    def __init__(self, layers: int, width: int, rngs: nnx.Rngs):
        self.layers = nnx.List([WNLinear(width, rngs) for _ in range(layers)])


TX = optax.adam(1e-3)  # one transformation for all: optax's compare by identity in a graphdef


def make(layers: int, width: int, parametrize: bool, hand: bool = False):
    model = (HandMLP if hand else MLP)(layers, width, nnx.Rngs(0))
    if parametrize:
        for layer in model.layers:
            pnnx.register_parametrization(layer, "kernel", px.WeightNorm())
    optimizer = nnx.Optimizer(model, TX, wrt=nnx.Param)
    return model, optimizer


def loss_fn(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def _step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


train_step = nnx.jit(_step)


def split_step(model, optimizer):
    """The split + ``jax.jit`` recipe: a pure function of the state, merged inside."""
    graphdef, state = nnx.split((model, optimizer))

    @functools.partial(jax.jit, donate_argnums=0)
    def pure_step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)
        loss = _step(model, optimizer, x, y)
        return nnx.state((model, optimizer)), loss

    box = [state]

    def step(x, y):
        box[0], loss = pure_step(box[0], x, y)
        return loss

    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    x = jax.random.normal(jax.random.key(1), (8, args.width))
    y = jax.random.normal(jax.random.key(2), (8, args.width))

    runs = {}
    model, opt = make(args.layers, args.width, False)
    runs["plain"] = lambda m=model, o=opt: train_step(m, o, x, y).block_until_ready()
    model, opt = make(args.layers, args.width, False, hand=True)
    runs["hand-written g, v (floor)"] = lambda m=model, o=opt: train_step(
        m, o, x, y
    ).block_until_ready()
    model, opt = make(args.layers, args.width, True)
    runs["parametrized"] = lambda m=model, o=opt: train_step(m, o, x, y).block_until_ready()
    try:
        tree_step = nnx.jit(_step, graph=False)  # NNX's tree mode (newer flax)
        model, opt = make(args.layers, args.width, True)
        tree_step(model, opt, x, y)
    except Exception as e:  # noqa: BLE001 - an older flax: no tree mode, or it refuses the model
        print(f"(nnx.jit(graph=False) skipped: {type(e).__name__}: {str(e)[:120]})")
    else:
        runs["parametrized, jit(graph=False)"] = lambda m=model, o=opt: tree_step(
            m, o, x, y
        ).block_until_ready()
    model, opt = make(args.layers, args.width, True)
    cached = nnx.cached_partial(train_step, model, opt)
    runs["parametrized+cached_partial"] = lambda: cached(x, y).block_until_ready()
    model, opt = make(args.layers, args.width, True)
    pure = split_step(model, opt)
    runs["parametrized, split + jax.jit"] = lambda: pure(x, y).block_until_ready()
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
            t0 = clock()
            for _ in range(args.calls):
                runs[k]()
            times[k].append((clock() - t0) / args.calls)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["plain"]
    print(
        f"backend {jax.default_backend()}, {args.layers} layers of {args.width}x{args.width}, "
        f"{args.clock} clock, median of {args.rounds} interleaved rounds"
    )
    for k, v in med.items():
        extra = ""
        if k.startswith(("parametrized", "hand")):
            extra = f"  (+{(v - base) / args.layers * 1e6:.0f} us per layer)"
        print(f"{k:34s} {v * 1e3:8.3f} ms  x{v / base:5.2f} vs plain{extra}")


if __name__ == "__main__":
    main()
