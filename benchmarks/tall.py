"""Tall matrices: what an orthogonal or low-rank n x k kernel costs against the plain kernel.

    python benchmarks/tall.py            # the full table (issue 12): run it alone on the machine
    python benchmarks/tall.py --quick    # small shapes, XLA optimisations off: < 60 s, a smoke run

A ``Dense(k)`` layer without bias on inputs of width n (kernel n x k: an embedding, a d_model x
d_head projection), trained on a small regression loss with plain SGD (``--optimizer adam`` for
Adam). For every shape n x k
(n in {1k, 10k, 30k, 100k}, k in {16, 64, 256}) and every method (parametrax's maps, geotorch
0.4's ``orthogonal`` and torch's ``parametrizations.orthogonal`` on ``Linear(n, k)``, whose
k x n weight is the same matrix transposed) one *cell* reports:

* register s: the registration alone (``model.init`` of the ``Parametrized`` layer, eagerly,
  every op compiled on first use; ``geotorch.orthogonal`` / ``orthogonal`` for torch);
* compile s: trace + lower + XLA compile of the training step (JAX only);
* step ms and × plain: one training step (forward, backward, SGD update), timed interleaved
  with the same step on the plain, unconstrained kernel in the same process (the ratio is the
  median of per-round ratios, as in ``run.py``);
* XLA MB and × plain: ``compiled.memory_analysis()`` of the two compiled steps (arguments +
  outputs - aliased + temporaries); torch has none;
* RSS Δ MB, every framework: the cell process's peak resident memory while it registers, compiles
  and steps the constrained layer, minus its resident memory before any model was built (after
  the imports and the data); the same for the plain step alone (measured first); and the peak
  resident memory of the whole process as the watcher saw it;
* orthonormality: ``max |K^T K - I|`` of the constrained kernel after the timed steps (``—``
  for ``LowRank``, whose columns are not orthonormal).

Each cell runs in its own subprocess (one at a time; ``--quick`` runs two at once), watched
by this one: a registration slower than ``--register-bound`` s (60), a whole cell slower than
``--cell-bound`` s (600), a process whose resident memory passes ``--mem-bound-gb`` (8), or a
compiled step whose XLA estimate passes the same bound is stopped and reported as ``exceeds
bound`` with the bound it exceeded, never left out; a cell that crashes is reported as failed.
``OPENBLAS_NUM_THREADS=1`` is set for every cell (``_blas.py``).

The full grid runs in priority order: first every shape for ``Orthogonal()``, ``Stiefel()``,
geotorch and torch, and the issue's target shapes (30000 x 50, 100000 x 64) for every map; then
the rest, ascending in size. ``--budget-s`` bounds the run's wall time: cells not started by
then are listed in the table as not run, with that reason. A cell whose method already exceeded
a bound at a shape no larger in n and in k is not run and reported as exceeding it (the costs
grow with n and k), naming the measured cell. Results are written after every cell;
``--resume`` keeps the cells already in ``tall.json`` and runs the others.

Writes ``tall.md`` and ``tall.json`` next to this file (``_quick/`` with ``--quick``, or
``--out``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.metadata
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _blas  # noqa: E402

JAX_METHODS = {  # label -> the parametrax spec entry, built in the cell's process
    "Orthogonal()": "Orthogonal()",
    'Orthogonal(map="cayley")': 'Orthogonal(map="cayley")',
    'Orthogonal(map="matrix_exp")': 'Orthogonal(map="matrix_exp")',
    "Stiefel()": "Stiefel()",
    'Stiefel(triv="cayley")': 'Stiefel(triv="cayley")',
    "Grassmannian()": "Grassmannian()",
    "LowRank(16)": "LowRank(16)",
}
TORCH_METHODS = ("geotorch 0.4 orthogonal", "torch orthogonal")
METHODS = tuple(JAX_METHODS) + TORCH_METHODS
NOT_ORTHONORMAL = {"LowRank(16)"}
PRIORITY_METHODS = ("Orthogonal()", "Stiefel()") + TORCH_METHODS  # every shape, run first
TARGETS = [(30000, 50), (100000, 64)]  # issue 12's targets: every method, run first
LR = {"sgd": 1e-2, "adam": 1e-3}

FULL = {
    "shapes": [(n, k) for n in (1000, 10000, 30000, 100000) for k in (16, 64, 256)],
    "rounds": 5,
    "round_s": 0.3,
    "batch": 32,
    "optimizer": "sgd",
    "torch_threads": 1,  # like OPENBLAS_NUM_THREADS=1: torch's spinning pool stalls on a busy CPU
}
QUICK = {
    "shapes": [(256, 16)],
    "rounds": 2,
    "round_s": 0.01,
    "batch": 8,
    "optimizer": "sgd",
    "torch_threads": 1,
}
# --quick checks that the table works; like run.py it lowers XLA's optimisation level
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


# ------------------------------------------------------------------------------------------------
# One cell, in its own process
# ------------------------------------------------------------------------------------------------
def emit(**kv) -> None:
    """One JSON line on stdout: the watching process reads progress and results from these."""
    print(json.dumps(kv), flush=True)


def _status_mb(key: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process in MB (Linux), else None."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _reset_peak() -> float | None:
    """Reset this process's resident high-water mark to its current RSS (Linux: ``5`` to
    ``/proc/self/clear_refs``); return the current RSS in MB, None where that is unavailable."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_mb("VmRSS")


def _peak_delta(base: float | None) -> float | None:
    hwm = _status_mb("VmHWM")
    return None if base is None or hwm is None else hwm - base


def _optimizer(cfg: dict) -> str:
    name = cfg.get("optimizer", "sgd")
    if name not in LR:
        raise SystemExit(f"unknown optimizer {name!r}; expected one of {', '.join(LR)}")
    return name


def paired_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def _data(n: int, k: int, batch: int, seed: int = 0):
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n)).astype(np.float32)
    y = rng.standard_normal((batch, k)).astype(np.float32)
    w0 = (rng.standard_normal((n, k)) / np.sqrt(n)).astype(np.float32)
    return x, y, w0


def jax_cell(method: str, n: int, k: int, cfg: dict, mem_bound_mb: float) -> None:
    import flax.linen as nn  # noqa: PLC0415
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import optax  # noqa: PLC0415
    from _harness import Runner, measure, xla_memory_mb  # noqa: PLC0415

    import parametrax as px  # noqa: PLC0415

    x, y, w0 = _data(n, k, cfg["batch"])
    x, y = jnp.asarray(x), jnp.asarray(y)
    entry = eval(
        JAX_METHODS[method],
        {  # noqa: S307 - a fixed table of this file
            "Orthogonal": px.Orthogonal,
            "Stiefel": px.Stiefel,
            "Grassmannian": px.Grassmannian,
            "LowRank": px.LowRank,
        },
    )
    model = px.Parametrized(nn.Dense(k, use_bias=False), {"kernel": entry})
    name = _optimizer(cfg)
    opt = getattr(optax, name)(LR[name])

    def px_loss(p, rest, x, y):
        return jnp.mean((model.apply({"params": p, **rest}, x) - y) ** 2)

    def plain_loss(p, rest, x, y):
        return jnp.mean((x @ p["kernel"] - y) ** 2)

    def compiled_runner(name, loss_fn, params, rest, bounded=True):
        def train_step(params, opt_state, rest, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, rest, x, y)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, rest, loss

        opt_state = opt.init(params)
        t0 = time.perf_counter()
        compiled = (
            jax.jit(train_step, donate_argnums=(0, 1))
            .lower(params, opt_state, rest, x, y)
            .compile()
        )
        compile_s = time.perf_counter() - t0
        mem = xla_memory_mb(compiled)
        if bounded and mem is not None and mem > mem_bound_mb:
            emit(
                phase="exceeded",
                bound=f"XLA memory {mem / 1024:.1f} GB > "
                f"{mem_bound_mb / 1024:.0f} GB ({name} step)",
                compile_s=compile_s,
            )
            raise SystemExit(0)
        carry = [params, opt_state]

        def step() -> float:
            p, o, _, loss = compiled(*carry, rest, x, y)
            carry[:] = [p, o]
            return float(jax.block_until_ready(loss))

        return Runner(name, step, step(), compile_s, mem), carry

    # the plain step first, alone: its resident-memory cost, then the constrained layer's
    base = _reset_peak()
    # (the reference: the memory bound applies to the constrained step only)
    plain, _ = compiled_runner("plain", plain_loss, {"kernel": jnp.asarray(w0)}, (), bounded=False)
    plain.step()
    plain_rss = _peak_delta(base)
    _reset_peak()

    t0 = time.perf_counter()
    variables = model.init(jax.random.key(0), x)
    jax.block_until_ready(variables)
    emit(phase="registered", register_s=time.perf_counter() - t0)
    params = variables["params"]
    rest = {c: v for c, v in variables.items() if c != "params"}

    lib, carry = compiled_runner("parametrax", px_loss, params, rest)
    emit(phase="compiled", compile_s=lib.compile_s, mem_mb=lib.mem_mb, plain_mem_mb=plain.mem_mb)
    timing = measure([lib, plain], rounds=cfg["rounds"], round_s=cfg["round_s"])
    rss = _peak_delta(base)
    kernel = px.linen.constrain(model, {"params": carry[0], **rest})["params"]["kernel"]
    kernel = np.asarray(kernel, np.float64)
    err = (
        None if method in NOT_ORTHONORMAL else float(np.max(np.abs(kernel.T @ kernel - np.eye(k))))
    )
    emit(
        phase="done",
        step_s=timing["parametrax"]["median_s"],
        plain_step_s=timing["plain"]["median_s"],
        step_ratio=paired_ratio(timing["parametrax"]["samples_s"], timing["plain"]["samples_s"]),
        rss_delta_mb=rss,
        plain_rss_delta_mb=plain_rss,
        orth_err=err,
        finite=bool(np.isfinite(kernel).all()),
    )


def torch_cell(method: str, n: int, k: int, cfg: dict) -> None:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from _harness import Runner, measure  # noqa: PLC0415

    if method.startswith("geotorch"):
        import geotorch  # noqa: PLC0415 - imported before the baseline, like torch

    torch.set_num_threads(cfg.get("torch_threads", 1))
    x, y, w0 = (torch.tensor(a) for a in _data(n, k, cfg["batch"]))
    name = _optimizer(cfg)

    def linear():
        lin = torch.nn.Linear(n, k, bias=False)  # weight: k x n, the n x k kernel transposed
        with torch.no_grad():
            lin.weight.copy_(w0.T)
        return lin

    def runner(label, lin):
        cls = torch.optim.SGD if name == "sgd" else torch.optim.Adam
        opt = cls(lin.parameters(), lr=LR[name])

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            loss = torch.mean((lin(x) - y) ** 2)
            loss.backward()
            opt.step()
            return float(loss.detach())

        return Runner(label, step, step())

    # the plain step first, alone: its resident-memory cost, then the constrained layer's
    base = _reset_peak()
    plain = runner("plain", linear())
    plain.step()
    plain_rss = _peak_delta(base)
    _reset_peak()

    lin = linear()
    t0 = time.perf_counter()
    if method.startswith("geotorch"):
        geotorch.orthogonal(lin, "weight")
    else:
        torch.nn.utils.parametrizations.orthogonal(lin, "weight")
    emit(phase="registered", register_s=time.perf_counter() - t0)

    lib = runner("constrained", lin)
    emit(phase="compiled", compile_s=None, mem_mb=None, plain_mem_mb=None)
    timing = measure([lib, plain], rounds=cfg["rounds"], round_s=cfg["round_s"])
    rss = _peak_delta(base)
    with torch.no_grad():
        w = lin.weight.double().numpy()
    emit(
        phase="done",
        step_s=timing["constrained"]["median_s"],
        plain_step_s=timing["plain"]["median_s"],
        step_ratio=paired_ratio(timing["constrained"]["samples_s"], timing["plain"]["samples_s"]),
        rss_delta_mb=rss,
        plain_rss_delta_mb=plain_rss,
        orth_err=float(np.max(np.abs(w @ w.T - np.eye(k)))),
        finite=bool(np.isfinite(w).all()),
        torch_threads=torch.get_num_threads(),
    )


def cell_main(
    method: str, n: int, k: int, quick: bool, mem_bound_gb: float, optimizer: str = "sgd"
) -> int:
    cfg = dict(QUICK if quick else FULL, optimizer=optimizer)
    if method in JAX_METHODS:
        jax_cell(method, n, k, cfg, mem_bound_gb * 1024)
    elif method in TORCH_METHODS:
        torch_cell(method, n, k, cfg)
    else:
        raise SystemExit(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return 0


# ------------------------------------------------------------------------------------------------
# The watcher: one subprocess per cell, stopped at a bound
# ------------------------------------------------------------------------------------------------
def _rss_mb(pid: int) -> float:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def run_cell(
    method: str,
    n: int,
    k: int,
    *,
    quick: bool,
    register_bound: float,
    cell_bound: float,
    mem_bound_gb: float,
    optimizer: str = "sgd",
) -> dict:
    """Run one cell in a subprocess; return its merged JSON lines, with ``exceeded`` (the bound
    it passed) when it was stopped or stopped itself, ``error`` when it failed."""
    env = dict(os.environ)
    if quick:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + QUICK_XLA_FLAGS).strip()
    cmd = [
        sys.executable,
        str(pathlib.Path(__file__).resolve()),
        "--cell",
        method,
        str(n),
        str(k),
        "--mem-bound-gb",
        str(mem_bound_gb),
        "--optimizer",
        optimizer,
    ] + (["--quick"] if quick else [])
    out: dict = {"method": method, "n": n, "k": k}
    try:
        out["load1"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    peak = 0.0
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, text=True)
        t0 = time.perf_counter()
        exceeded = None
        while proc.poll() is None:
            time.sleep(0.1)
            elapsed = time.perf_counter() - t0
            peak = max(peak, _rss_mb(proc.pid))
            so.seek(0)
            registered = '"registered"' in so.read()
            if peak > mem_bound_gb * 1024:
                exceeded = f"memory: RSS > {mem_bound_gb:g} GB"
            elif not registered and elapsed > register_bound:
                exceeded = f"registration > {register_bound:g} s"
            elif elapsed > cell_bound:
                exceeded = f"cell > {cell_bound:g} s"
            if exceeded:
                proc.kill()
                proc.wait()
                break
        out["wall_s"] = time.perf_counter() - t0
        so.seek(0)
        for line in so.read().splitlines():
            if line.startswith("{"):
                out.update(json.loads(line))
        se.seek(0)
        err_tail = se.read()[-2000:]
    out["peak_rss_mb"] = peak
    if exceeded or out.get("phase") == "exceeded":
        out["exceeded"] = exceeded or out.pop("bound")
    elif proc.returncode != 0 or out.get("phase") != "done":
        out["error"] = f"exit {proc.returncode}: " + (err_tail.strip().splitlines() or ["?"])[-1]
    return out


def dominated_by(cells: list[dict], method: str, n: int, k: int) -> dict | None:
    """A measured cell of ``method`` that exceeded a bound at a shape no larger than n x k in
    both n and k (so n x k would exceed it too), or None."""
    for c in cells:
        if (
            c["method"] == method
            and "exceeded" in c
            and "inferred_from" not in c
            and c["n"] <= n
            and c["k"] <= k
        ):
            return c
    return None


def plan(shapes, methods) -> list[tuple[str, int, int]]:
    """The cells in run order: shapes x methods; for the full grid, the priority cells first
    (every shape for PRIORITY_METHODS, the TARGETS shapes for every method), each group
    ascending in n then k so that a bound exceeded at a small shape is known before a larger."""
    cells = [(m, n, k) for (n, k) in shapes for m in methods]
    order = {m: i for i, m in enumerate(METHODS)}

    def key(c):
        m, n, k = c
        first = m in PRIORITY_METHODS or (n, k) in TARGETS
        return (0 if first else 1, n, k, order[m])

    return sorted(dict.fromkeys(cells), key=key)


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------
def _f(v, fmt):
    return "—" if v is None else format(v, fmt)


def _targets(cells: list[dict]) -> list[str]:
    """Issue 12's targets at its two shapes, cell by cell: met or not."""
    rows = [
        "## Issue 12 targets",
        "",
        "Registration under 10 s (compilation included: registration + compile of the step), "
        "training step at most 4× the plain step, XLA memory at most 4× the plain step's, "
        "orthonormal columns to 1e-5 (float32). ✓ met, ✗ not met.",
        "",
        "| n × k | method | register + compile s | step × plain | XLA × plain | orthonormality |",
        "|---|---|---:|---:|---:|---:|",
    ]
    by = {(c["method"], c["n"], c["k"]): c for c in cells}
    for n, k in TARGETS:
        for m in JAX_METHODS:
            c = by.get((m, n, k))
            pre = f"| {n} × {k} | {m} | "
            if c is None or "exceeded" in c or "error" in c:
                why = (
                    "not run"
                    if c is None
                    else f"exceeds bound ({c['exceeded']})"
                    if "exceeded" in c
                    else f"failed ({c['error']})"
                )
                rows.append(pre + f"✗ {why} | | | |")
                continue
            reg = c["register_s"] + (c.get("compile_s") or 0.0)
            mem = (
                c["mem_mb"] / c["plain_mem_mb"]
                if c.get("mem_mb") and c.get("plain_mem_mb")
                else None
            )
            err = c.get("orth_err")

            def mark(ok):
                return "✓" if ok else "✗"

            rows.append(
                pre
                + f"{reg:.1f} {mark(reg < 10)} | {c['step_ratio']:.1f} {mark(c['step_ratio'] <= 4)}"
                + f" | {_f(mem, '.2f')} {mark(mem is not None and mem <= 4)} | "
                + ("— (not orthonormal)" if err is None else f"{err:.1e} {mark(err <= 1e-5)}")
                + " |"
            )
    return rows + [""]


def markdown(results: dict) -> str:
    m = results["machine"]
    cfg = results["config"]
    opt = cfg.get("optimizer", "sgd")
    versions = ", ".join(
        f"{name} {m[key]}"
        for name, key in (("JAX", "jax"), ("torch", "torch"), ("geotorch", "geotorch"))
        if m.get(key)
    )
    head = [
        "# Tall matrices: constrained n x k kernel vs the plain kernel",
        "",
        f"Generated by `{results.get('command') or 'python benchmarks/tall.py'}` on "
        f"{m['date']} in {results['total_s']:.0f} s. Do not edit by hand."
        + (
            f" It kept {results.get('kept_cells', 0)} cells of earlier runs ("
            + "; ".join(
                f"`{r['command']}` on {r['date']}, load average {r['load1']} at its start"
                for r in results["resumed_from"]
            )
            + ") and ran the others: each cell's load column says under what load it ran."
            if results.get("resumed_from")
            else ""
        )
        + (
            " **Quick run: small shapes and XLA optimisations off; it checks that the table "
            "works, its figures mean nothing.**"
            if results["quick"]
            else ""
        ),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores"
        + (f", {m['ram_gb']:g} GB" if m.get("ram_gb") else "")
        + (
            f", load average {m['load1']:g} at the start (shared with other jobs: see the "
            "load column)"
            if m.get("load1") is not None
            else ""
        )
        + f"; Python {m['python']}"
        + (f", {versions}" if versions else "")
        + f", OpenBLAS threads {m['openblas_threads']}. Bounds: registration "
        f"{results['bounds']['register_s']:g} s, cell {results['bounds']['cell_s']:g} s, "
        f"memory {results['bounds']['mem_gb']:g} GB (resident, or XLA's estimate of a step).",
        "",
        f"One training step (forward, backward, {opt.upper() if opt == 'sgd' else 'Adam'} "
        f"update) of `Dense(k, use_bias=False)` on a batch of {cfg['batch']} inputs of width n, "
        "mean squared error; step × plain = against the same step on the unconstrained kernel "
        f"in the same process, the median of {cfg['rounds']} interleaved per-round ratios. "
        "Registration = `model.init` of the `Parametrized` layer (eager, compiles included); "
        "compile = the jitted step; XLA MB = `compiled.memory_analysis()` of the step "
        "(arguments + outputs − aliased + temporaries), × plain against the plain step's; "
        "RSS Δ MB = the cell process's peak resident memory while it registers, compiles and "
        "steps the constrained layer, minus its resident memory before any model (the plain "
        "step's own Δ, measured first, in brackets); orthonormality = max |KᵀK − I| after the "
        "timed steps (float32). torch rows: `Linear(n, k)` (a k x n weight), "
        f"`torch.set_num_threads({cfg.get('torch_threads', 'default')})`, no XLA estimate. load = the machine's 1-minute load average when the "
        "cell started.",
        "",
    ]
    head += _targets(results["cells"])
    head += [
        "## Every cell",
        "",
        "| n | k | method | register s | compile s | step ms | plain ms | step × plain | XLA MB "
        "| XLA × plain | RSS Δ MB (plain) | orthonormality | load |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {mm: i for i, mm in enumerate(METHODS)}
    cells = sorted(results["cells"], key=lambda c: (c["n"], c["k"], order.get(c["method"], 99)))
    rows = []
    for c in cells:
        pre = f"| {c['n']} | {c['k']} | {c['method']} | "
        load = _f(c.get("load1"), ".1f")
        if "exceeded" in c or "error" in c or "not_run" in c:
            if "inferred_from" in c:
                n0, k0 = c["inferred_from"]
                what = f"**exceeds bound** (not run: exceeded {c['exceeded']} at {n0} × {k0})"
            elif "exceeded" in c:
                what = f"**exceeds bound** ({c['exceeded']})"
            elif "error" in c:
                what = f"**failed** ({c['error']})"
            else:
                what = f"**not run** ({c['not_run']})"
            peak = c.get("peak_rss_mb")
            rows.append(
                pre
                + _f(c.get("register_s"), ".2f")
                + f" | {what} | | | | | | "
                + (f"peak RSS {peak:.0f}" if peak else "")
                + f" | | {load if 'inferred_from' not in c and 'not_run' not in c else ''} |"
            )
            continue
        mem, pmem = c.get("mem_mb"), c.get("plain_mem_mb")
        rss, prss = c.get("rss_delta_mb"), c.get("plain_rss_delta_mb")
        rows.append(
            pre + f"{c['register_s']:.2f} | {_f(c.get('compile_s'), '.2f')} | "
            f"{c['step_s'] * 1e3:.3g} | {c['plain_step_s'] * 1e3:.3g} | {c['step_ratio']:.2f} | "
            f"{_f(mem, '.1f')} | "
            + (f"{mem / pmem:.2f}" if mem and pmem else "—")
            + f" | {_f(rss, '.0f')} ({_f(prss, '.0f')}) | {_f(c.get('orth_err'), '.1e')} | "
            + f"{load} |"
        )
    return "\n".join(head + rows) + "\n"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """``_blas.machine()`` with the versions of the frameworks the cells import (read from the
    installed metadata: the cells run in their own processes)."""
    return _blas.machine(
        **{
            d: v
            for d in ("jax", "jaxlib", "flax", "optax", "torch", "geotorch")
            if (v := _version(d))
        }
    )


def parse_shapes(text: str) -> list[tuple[int, int]]:
    try:
        return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",")]
    except ValueError:
        raise SystemExit(
            f"--shapes: expected NxK[,NxK...] such as 1000x16,1000x64; got {text!r}"
        ) from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes, XLA optimisations off")
    ap.add_argument(
        "--shapes", default=None, help="NxK,NxK,... (default: the full grid and the targets)"
    )
    ap.add_argument(
        "--methods", default=None, help="';'-separated subset of: " + "; ".join(METHODS)
    )
    ap.add_argument("--no-torch", action="store_true", help="skip geotorch and torch")
    ap.add_argument("--optimizer", choices=sorted(LR), default="sgd", help="default sgd")
    ap.add_argument("--register-bound", type=float, default=60.0, help="seconds (default 60)")
    ap.add_argument("--cell-bound", type=float, default=600.0, help="seconds (default 600)")
    ap.add_argument("--mem-bound-gb", type=float, default=8.0, help="GB (default 8)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-time budget of the run: cells not started by then are listed as not run",
    )
    ap.add_argument(
        "--resume", action="store_true", help="keep the cells already in tall.json, run the rest"
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="cells run at once (default 1; --quick: 2, its figures mean nothing)",
    )
    ap.add_argument("--out", default=None, help="output folder")
    ap.add_argument("--cell", nargs=3, metavar=("METHOD", "N", "K"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cell:
        method, n, k = args.cell
        return cell_main(method, int(n), int(k), args.quick, args.mem_bound_gb, args.optimizer)

    cfg = dict(QUICK if args.quick else FULL, optimizer=args.optimizer)
    if args.shapes:
        shapes = parse_shapes(args.shapes)
    else:
        shapes = cfg["shapes"] + (
            [] if args.quick else [s for s in TARGETS if s not in cfg["shapes"]]
        )
    methods = [m.strip() for m in args.methods.split(";")] if args.methods else list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; expected some of {list(METHODS)}")
    if args.no_torch:
        methods = [m for m in methods if m not in TORCH_METHODS]
    out = pathlib.Path(args.out) if args.out else (HERE / "_quick" if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    todo = plan(shapes, methods)
    kept: list[dict] = []
    resumed = None
    if args.resume and (out / "tall.json").exists():
        wanted = set(todo)
        previous = json.loads((out / "tall.json").read_text())
        kept = [
            c
            for c in previous["cells"]
            if (c["method"], c["n"], c["k"]) in wanted and "not_run" not in c
        ]
        # the runs the kept cells came from (a resumed file may itself have been resumed)
        resumed = previous.get("resumed_from") or []
        resumed = resumed + [
            {
                "command": previous.get("command"),
                "date": previous.get("machine", {}).get("date"),
                "load1": previous.get("machine", {}).get("load1"),
            }
        ]
    results = {
        "machine": machine(),
        "command": "python benchmarks/tall.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "config": cfg,
        "shapes": args.shapes,
        "bounds": {
            "register_s": args.register_bound,
            "cell_s": args.cell_bound,
            "mem_gb": args.mem_bound_gb,
            "budget_s": args.budget_s,
        },
        "cells": list(kept),
    }
    if resumed is not None:
        results["resumed_from"] = resumed
        results["kept_cells"] = len(kept)
    t_all = time.perf_counter()

    def write():
        results["total_s"] = time.perf_counter() - t_all
        results["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (out / "tall.json").write_text(json.dumps(results, indent=1))
        (out / "tall.md").write_text(markdown(results))

    def one(cell):
        method, n, k = cell
        if args.budget_s is not None and time.perf_counter() - t_all > args.budget_s:
            c = {
                "method": method,
                "n": n,
                "k": k,
                "not_run": f"the run's wall-time budget of {args.budget_s:g} s was spent",
            }
            print(f"[  -  ] {n}x{k} {method}: not run (budget)", flush=True)
            return c
        big = dominated_by(results["cells"], method, n, k)
        if big is not None:
            print(f"[  -  ] {n}x{k} {method}: exceeds bound at {big['n']}x{big['k']}", flush=True)
            return {
                "method": method,
                "n": n,
                "k": k,
                "exceeded": big["exceeded"],
                "inferred_from": [big["n"], big["k"]],
            }
        c = run_cell(
            method,
            n,
            k,
            quick=args.quick,
            register_bound=args.register_bound,
            cell_bound=args.cell_bound,
            mem_bound_gb=args.mem_bound_gb,
            optimizer=args.optimizer,
        )
        state = (
            f"exceeds bound ({c['exceeded']})"
            if "exceeded" in c
            else f"FAILED ({c['error']})"
            if "error" in c
            else f"step x{c['step_ratio']:.2f}, register {c['register_s']:.2f} s"
        )
        print(f"[{c['wall_s']:5.1f}s] {n}x{k} {method}: {state}", flush=True)
        return c

    done = {(c["method"], c["n"], c["k"]) for c in kept}
    todo = [c for c in todo if c not in done]
    jobs = args.jobs or (2 if args.quick else 1)  # timed cells must not share the CPU
    if jobs == 1:
        for cell in todo:
            results["cells"].append(one(cell))
            write()
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            results["cells"] += list(pool.map(one, todo))
    write()
    print(f"wrote {out / 'tall.md'} in {results['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    _blas.pin_blas_threads()
    raise SystemExit(main())
