"""Python overhead of the NNX front: a training step in each NNX stepping mode, an eager read.

Run from the repository root (``PYTHONPATH=src`` to time a working tree)::

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/nnx_overhead.py --clock thread

Three models (``--layers`` deep MLPs of ``--width`` x ``--width`` layers, batch 8, Adam, so the
arithmetic is negligible and Python dominates):

* ``plain``: an MLP of ``nnx.Linear``;
* ``hand``: the same MLP of a hand-written weight-normalised layer holding ``g``, ``v`` and ``bias``
  as plain ``nnx.Param`` attributes: the same Variables (and optimizer slots) as the parametrized
  model, so the floor any parametrized layer could reach in a mode;
* ``param``: the plain MLP with every kernel under ``WeightNorm``.

each stepped (``nnx.value_and_grad`` + ``nnx.Optimizer.update``) in five ways:

* ``nnx.jit``: NNX's default graph mode, the whole graph walked in Python on every call;
* ``nnx.jit(graph=False)``: NNX's tree mode (flax >= 0.12.4);
* ``nnx.jit_partial(graph=False)``: model and optimizer flattened once, at construction
  (flax >= 0.12.5);
* ``nnx.cached_partial``: the ``nnx.jit`` step with the graph walk cached;
* ``split + jax.jit``: ``nnx.split`` once, a ``jax.jit`` step of ``(graphdef, state)`` that
  ``nnx.merge``-s inside and returns the new state.

and ``eager read``: ``layer.kernel`` of one WeightNorm-parametrized layer outside any trace,
against the jitted map on the raw arrays.

Timings are interleaved (round k runs every workload) and the figure is the median over rounds
of the mean time per call within a round. Printed per mode: the three models' times, each
against plain ``nnx.jit`` (the reference), and the parametrized model's extra time per layer over
the plain and the hand-written model stepped the same way. ``--clock thread`` times the calling
thread's CPU time instead of the wall clock: the per-step Python cost this benchmark is about,
less sensitive to other processes on a shared machine. Recorded runs are in ``nnx_overhead.txt``.
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


MODES = (
    "nnx.jit",
    "nnx.jit(graph=False)",
    "nnx.jit_partial(graph=False)",
    "nnx.cached_partial",
    "split + jax.jit",
)
MODELS = ("plain", "hand", "param")


def stepper(mode: str, model, optimizer, x, y):
    """A zero-argument step of ``mode`` on ``(model, optimizer)``; raises where this flax lacks
    the mode (``graph=``: flax >= 0.12.4, ``jit_partial``: flax >= 0.12.5)."""
    if mode == "nnx.jit":
        return lambda: train_step(model, optimizer, x, y)
    if mode == "nnx.jit(graph=False)":
        tree_step = nnx.jit(_step, graph=False)
        return lambda: tree_step(model, optimizer, x, y)
    if mode == "nnx.jit_partial(graph=False)":
        partial_step = nnx.jit_partial(_step, model, optimizer, graph=False)
        return lambda: partial_step(x, y)
    if mode == "nnx.cached_partial":
        cached = nnx.cached_partial(train_step, model, optimizer)
        return lambda: cached(x, y)
    pure = split_step(model, optimizer)
    return lambda: pure(x, y)


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
    for mode in MODES:
        for kind in MODELS:
            model, opt = make(args.layers, args.width, kind == "param", hand=kind == "hand")
            try:
                step = stepper(mode, model, opt, x, y)
                step()
            except Exception as e:  # noqa: BLE001 - an older flax without this mode
                print(f"({mode} skipped for {kind}: {type(e).__name__}: {str(e)[:120]})")
                continue
            runs[(mode, kind)] = lambda step=step: step().block_until_ready()
    layer = nnx.Linear(args.width, args.width, rngs=nnx.Rngs(3))
    pnnx.register_parametrization(layer, "kernel", px.WeightNorm())
    runs[("eager read (1 layer)", "param")] = lambda: layer.kernel.block_until_ready()
    kernel_fn = jax.jit(lambda g, v: px.WeightNorm().forward(g, v))
    pl = layer.parametrizations.kernel
    runs[("jitted map (1 layer)", "param")] = lambda: kernel_fn(
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
    base = med[("nnx.jit", "plain")]
    print(
        f"backend {jax.default_backend()}, {args.layers} layers of {args.width}x{args.width}, "
        f"{args.clock} clock, median of {args.rounds} interleaved rounds; "
        "x = against plain nnx.jit"
    )
    print(
        f"{'mode':30s} {'plain':>15s} {'hand':>15s} {'param':>15s}   param per layer over "
        "plain / hand (same mode)"
    )
    for mode in MODES:
        cells, got = [], {}
        for kind in MODELS:
            v = med.get((mode, kind))
            got[kind] = v
            cells.append(f"{v * 1e3:6.3f} ms x{v / base:4.2f}" if v is not None else f"{'-':>15s}")
        extra = ""
        if got["param"] is not None:
            per = [
                f"{(got['param'] - got[k]) / args.layers * 1e6:+.0f} us" if got[k] else "-"
                for k in ("plain", "hand")
            ]
            extra = f"   {per[0]} / {per[1]}"
        print(f"{mode:30s} {cells[0]} {cells[1]} {cells[2]}{extra}")
    for k in ("eager read (1 layer)", "jitted map (1 layer)"):
        print(f"{k:30s} {med[(k, 'param')] * 1e3:6.3f} ms")


if __name__ == "__main__":
    main()
