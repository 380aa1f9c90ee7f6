"""Timing machinery shared by the benchmark workloads.

A *runner* is one implementation of one workload (parametrax, hand-written JAX, PyTorch ...)
that owns its weights, optimizer state and batch, and exposes ``step()``: one full training
step (forward, backward, optimizer update) that returns only once the new loss is computed
(``block_until_ready`` for JAX; PyTorch's CPU ops are synchronous). The runners of one
workload are timed *interleaved*: round ``k`` runs every runner (in an order rotated by ``k``)
for a few steps, so slow drifts of the machine (other processes, thermal) hit every runner
alike; the reported figure is the median over rounds of the mean step time within a round.
Warm-up steps (and, for JAX, compilation) are excluded.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax


@dataclasses.dataclass
class Runner:
    name: str
    step: Callable[[], float]  # one training step; returns the loss as a Python float
    loss0: float  # loss of the first training step (computed at the initial weights)
    compile_s: float | None = None  # trace + lower + compile of the jitted step (JAX only)
    mem_mb: float | None = None  # XLA buffers of the compiled step: args + outputs + temps
    note: str = ""


def xla_memory_mb(compiled: Any) -> float | None:
    """Bytes XLA reserves to run the compiled step (arguments + outputs − aliased + temps)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # pragma: no cover - backend without memory analysis
        return None
    if m is None:
        return None
    total = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )
    return total / 2**20


def jax_runner(
    name: str,
    loss_fn: Callable,
    params: Any,
    aux: Any,
    batch: tuple,
    opt: optax.GradientTransformation,
    *,
    loss_updates_aux: bool = False,
    note: str = "",
) -> Runner:
    """A runner for ``loss_fn(params, aux, *batch)`` trained with ``opt``.

    ``aux`` holds non-trainable values (a trivialization base, spectral norm's ``u``, ``v``).
    With ``loss_updates_aux`` the loss function returns ``(loss, new_aux)`` (training mode).
    ``loss0`` is the loss the first training step reports: computed at the initial weights
    (after a stateful parametrization's first state update, as in every implementation).
    """

    def train_step(params, opt_state, aux, *batch):
        if loss_updates_aux:
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, aux, *batch)
        else:
            loss, grads = jax.value_and_grad(loss_fn)(params, aux, *batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, aux, loss

    opt_state = opt.init(params)
    t0 = time.perf_counter()
    jitted = jax.jit(train_step, donate_argnums=(0, 1, 2))
    compiled = jitted.lower(params, opt_state, aux, *batch).compile()
    compile_s = time.perf_counter() - t0
    mem = xla_memory_mb(compiled)
    # Own copies: the compiled step donates (and so invalidates) its inputs.
    carry = list(jax.tree.map(lambda a: jax.numpy.array(a, copy=True), (params, opt_state, aux)))
    batch = tuple(batch)

    def step() -> float:
        p, o, a, loss = compiled(*carry, *batch)
        carry[:] = [p, o, a]
        return float(jax.block_until_ready(loss))

    loss0 = step()
    return Runner(name, step, loss0, compile_s, mem, note)


def measure(
    runners: list[Runner],
    *,
    rounds: int,
    warmup: int = 2,
    round_s: float = 0.25,
    max_steps: int = 500,
) -> dict[str, dict]:
    """Median (over ``rounds``) seconds per training step of every runner, interleaved."""
    steps = {}
    for r in runners:
        for _ in range(warmup):  # first calls pay one-time costs (allocation, page faults)
            loss = r.step()
        if loss is not None and not np.isfinite(loss):
            raise FloatingPointError(f"{r.name}: loss became {loss} during warm-up")
        # calibrate on a batch of steps, not on the (slower) first ones
        n, t0 = 0, time.perf_counter()
        while True:
            r.step()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min(0.1, round_s) or n >= max_steps:
                break
        per = elapsed / n
        steps[r.name] = int(min(max_steps, max(1, round(round_s / max(per, 1e-9)))))
    samples: dict[str, list[float]] = {r.name: [] for r in runners}
    for k in range(rounds):
        order = runners[k % len(runners) :] + runners[: k % len(runners)]
        for r in order:
            n = steps[r.name]
            t0 = time.perf_counter()
            for _ in range(n):
                r.step()
            samples[r.name].append((time.perf_counter() - t0) / n)
    return {
        name: {
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "max_s": max(ts),
            "rounds": len(ts),
            "steps_per_round": steps[name],
            "samples_s": ts,  # one mean step time per round, in round order (for paired ratios)
        }
        for name, ts in samples.items()
    }
