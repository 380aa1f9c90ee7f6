"""The parametrax benchmark suite: ``python benchmarks/run.py`` (``--quick`` for a smoke run).

Times one full training step (forward, backward, optimizer update) of each workload three
ways in the same process, interleaved: parametrax, the same model hand-written in plain JAX
(the constraint inlined and computed once per step: the zero-overhead limit), and PyTorch's
``torch.nn.utils.parametrizations`` with and without ``parametrize.cached()`` when torch is
importable; and the peers a JAX user compares with (``peers.py``; ``--no-peers`` skips them):
flax.linen's, flax.nnx's and equinox's own ``SpectralNorm`` (W3) and ``WeightNorm`` (W4), and
parametrax's NNX front (W1). Sets ``OPENBLAS_NUM_THREADS=1`` before JAX loads (``_blas.py``;
``PARAMETRAX_BENCH_BLAS_THREADS`` overrides it). Writes ``results.json``, ``results.md`` and ``results.png`` next to this file (or
to ``--out``). Full run: under 10 minutes on 2 CPU cores; ``--quick``: under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _blas  # noqa: E402
from _blas import pin_blas_threads  # noqa: E402

# One OpenBLAS thread unless PARAMETRAX_BENCH_BLAS_THREADS says otherwise (_blas.py): set
# before JAX and numpy load OpenBLAS.
BLAS_THREADS = pin_blas_threads()

# --quick is a smoke run of every part of the suite, not a source of figures: it lowers XLA's
# optimisation level (set before JAX starts) to halve compile times.
QUICK_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "--quick" in sys.argv[1:]:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + QUICK_XLA_FLAGS).strip()

import jax  # noqa: E402
import sweeps  # noqa: E402
import workloads as W  # noqa: E402
from _harness import measure  # noqa: E402

FULL = {
    "rounds": 7,
    "round_s": 0.4,
    "w1_sizes": (64, 256, 512),
    "w1_tutorial_sizes": (256, 512),
    "w2": {"hidden": 256, "inputs": 32, "steps": 100, "batch": 64},
    "w3": {"channels": 64, "size": 32, "batch": 64},
    "w4": {"width": 512, "depth": 3, "inputs": 784, "batch": 256},
    "map_sizes": (32, 64, 128, 256, 512, 1024),
    "householder_max": 1024,
    "map_rounds": 5,
    "map_round_s": 0.15,
    "depths": (1, 4, 16, 64),
    "w1_maps": ("matrix_exp", "cayley"),
    "compile_map": "matrix_exp",
    "prim_sizes": (256, 512),
    "prim_convs": ((3, 64, 32), (64, 64, 16)),
    "prim_rnn": (64, 100, 32, 256),
}
QUICK = {  # a smoke run of every part: tiny sizes, one configuration per workload
    "rounds": 3,
    "round_s": 0.05,
    "w1_sizes": (64,),
    "w1_tutorial_sizes": (),
    "no_unparametrized": True,
    "w2": {"hidden": 64, "inputs": 8, "steps": 20, "batch": 16},
    "w3": {"channels": 16, "size": 16, "batch": 16},
    "w4": {"width": 128, "depth": 3, "inputs": 64, "batch": 64},
    "map_sizes": (32,),
    "householder_max": 32,
    "map_rounds": 3,
    "map_round_s": 0.03,
    "depths": (1,),
    "w1_maps": ("cayley",),  # W2 covers the matrix exponential
    "compile_map": "cayley",
    "prim_sizes": (64,),
    "prim_convs": ((3, 16, 16),),
    "prim_rnn": (16, 20, 8, 64),
}


def machine() -> dict:
    """``_blas.machine()`` (CPU, cores, memory, load, OS, Python, OpenBLAS threads, date) with
    the versions of everything measured."""
    import flax
    import optax

    info = _blas.machine(
        jax=jax.__version__, jax_backend=jax.default_backend(), flax=flax.__version__
    )

    try:
        import equinox

        info["equinox"] = equinox.__version__
    except ImportError:
        pass
    info["optax"] = optax.__version__
    if W.HAVE_TORCH:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def workload_list(cfg: dict, torch_ok: bool, peers: bool = True):
    out = []
    inline = not cfg.get("no_unparametrized")  # --quick: fewer runners, fewer compiles
    for m in cfg["w1_maps"]:
        for n in cfg["w1_sizes"]:
            out.append(
                (
                    f"W1 Dense {n}x{n} orthogonal ({m})",
                    "W1",
                    lambda n=n, m=m: W.w1_dense(
                        n, m, torch_ok=torch_ok, inline=inline, peers=peers
                    ),
                )
            )
    for n in cfg["w1_tutorial_sizes"]:
        out.append(
            (
                f"W1 Dense {n}x{n} [Skew, Cayley] (tutorial chain)",
                "W1",
                lambda n=n: W.w1_dense(n, "tutorial_cayley", torch_ok=torch_ok, inline=inline),
            )
        )
    w2 = cfg["w2"]
    out.append(
        (
            f"W2 RNN h={w2['hidden']} T={w2['steps']} orthogonal (matrix_exp)",
            "W2",
            lambda: W.w2_rnn(
                **w2, torch_ok=torch_ok, inline=inline, torch_loop=not cfg.get("no_unparametrized")
            ),
        )
    )
    w3 = cfg["w3"]
    out.append(
        (
            f"W3 disc 3 conv x{w3['channels']} + spectral norm",
            "W3",
            lambda: W.w3_disc(spectral=True, **w3, torch_ok=torch_ok, inline=inline, peers=peers),
        )
    )
    if not cfg.get("no_unparametrized"):
        out.append(
            (
                f"W3 disc 3 conv x{w3['channels']} (no SN)",
                "W3",
                lambda: W.w3_disc(spectral=False, **w3, torch_ok=torch_ok),
            )
        )
    w4 = cfg["w4"]
    out.append(
        (
            f"W4 MLP {w4['depth']}x{w4['width']} + weight norm",
            "W4",
            lambda: W.w4_mlp(weight_norm=True, **w4, torch_ok=torch_ok, inline=inline, peers=peers),
        )
    )
    if not cfg.get("no_unparametrized"):
        out.append(
            (
                f"W4 MLP {w4['depth']}x{w4['width']} (no WN)",
                "W4",
                lambda: W.w4_mlp(weight_norm=False, **w4, torch_ok=torch_ok),
            )
        )
    return out


def progress(msg: str) -> None:
    print(msg, flush=True)


def run(cfg: dict, torch_ok: bool, only: set[str] | None, peers: bool = True) -> dict:
    results = {"machine": machine(), "config": {k: v for k, v in cfg.items()}, "load_start": load()}
    t_all = time.perf_counter()
    results["workloads"] = []
    if only is None or only & {"W1", "W2", "W3", "W4"}:
        for title, group, build in workload_list(cfg, torch_ok, peers):
            if only is not None and group not in only:
                continue
            t0 = time.perf_counter()
            runners = build()
            gap = W.check_losses(title, runners)
            timing = measure(runners, rounds=cfg["rounds"], round_s=cfg["round_s"])
            entry = {"title": title, "group": group, "loss_gap": gap, "runners": []}
            for r in runners:
                entry["runners"].append(
                    {
                        "name": r.name,
                        "loss0": r.loss0,
                        "compile_s": r.compile_s,
                        "mem_mb": r.mem_mb,
                        **timing[r.name],
                    }
                )
            results["workloads"].append(entry)
            best = {r["name"]: r["median_s"] * 1e3 for r in entry["runners"]}
            progress(
                f"[{time.perf_counter() - t0:5.1f}s] {title}: "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in best.items())
            )
    results["maps"] = {}
    if only is None or "maps" in only:
        for n in cfg["map_sizes"]:
            t0 = time.perf_counter()
            results["maps"][n] = sweeps.map_cost(
                n,
                rounds=cfg["map_rounds"] if n < 512 else min(3, cfg["map_rounds"]),
                round_s=cfg["map_round_s"],
                householder_max=cfg["householder_max"],
                torch_ok=torch_ok,
                quick=bool(cfg.get("no_unparametrized")),
            )
            progress(
                f"[{time.perf_counter() - t0:5.1f}s] map cost n={n}: "
                + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in results["maps"][n].items())
            )
    results["compile"] = {}
    if only is None or "compile" in only:
        for d in cfg["depths"]:
            t0 = time.perf_counter()
            results["compile"][d] = sweeps.compile_time(d, map_name=cfg["compile_map"])
            res = results["compile"][d]
            progress(
                f"[{time.perf_counter() - t0:5.1f}s] compile, {d} orthogonal layers: "
                + ", ".join(f"{k} {v['total_s']:.2f} s" for k, v in res.items())
            )
    results["primitives"] = {}
    if (only is None or "primitives" in only) and "prim_sizes" in cfg:
        t0 = time.perf_counter()
        results["primitives"] = sweeps.primitives(
            n_sizes=cfg["prim_sizes"],
            convs=cfg["prim_convs"],
            rnn=cfg["prim_rnn"],
            rounds=cfg["map_rounds"],
            round_s=cfg["map_round_s"],
            torch_ok=torch_ok,
        )
        progress(
            f"[{time.perf_counter() - t0:5.1f}s] base operations: "
            + ", ".join(f"{k} {v['jax'] * 1e3:.2f} ms" for k, v in results["primitives"].items())
        )
    results["load_end"] = load()
    results["total_s"] = time.perf_counter() - t_all
    results["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
def _ms(s):
    return f"{s * 1e3:.2f}" if s is not None else "—"


def _find(entry, prefix):
    for r in entry["runners"]:
        if r["name"].startswith(prefix):
            return r
    return None


def ratio(a: dict, b: dict) -> float:
    """Time ratio a / b of two runners of one workload: the median of the per-round ratios.

    The runners of a workload run interleaved, round by round, so a load spike from another
    process slows both members of a pair; pairing cancels it where the ratio of medians would
    not. Falls back to the ratio of medians for results without per-round samples."""
    sa, sb = a.get("samples_s"), b.get("samples_s")
    if sa and sb and len(sa) == len(sb):
        return statistics.median(x / y for x, y in zip(sa, sb))
    return a["median_s"] / b["median_s"]


def summary_rows(results: dict) -> list[dict]:
    rows = []
    for e in results["workloads"]:
        lib = _find(e, W.PX) or _find(e, "flax")
        ref = _find(e, W.JAX)
        inline = _find(e, W.FLAX_INLINE)
        torch_rs = [r for r in e["runners"] if r["name"].startswith("torch")]
        best_torch = min(torch_rs, key=lambda r: r["median_s"]) if torch_rs else None
        plain_torch = [r for r in torch_rs if "cached" not in r["name"]]
        rows.append(
            {
                "title": e["title"],
                "lib": lib,
                "ref": ref,
                "ratio": ratio(lib, ref),
                "inline": inline,
                "ratio_inline": ratio(lib, inline) if inline else None,
                "torch_best": best_torch,
                "torch_plain": min(plain_torch, key=lambda r: r["median_s"])
                if plain_torch
                else None,
            }
        )
    return rows


PEERS_NOTE = (
    "Flax's and equinox's own wrappers, and parametrax's NNX front, timed interleaved with "
    "parametrax (linen) in the same process; ratio = peer / parametrax, the median of the "
    "per-round ratios. Every peer starts from the same weights, batch and power-iteration "
    "vectors, and its first loss agrees. The NNX rows are stepped as NNX users step them "
    "(`nnx.jit` of `nnx.value_and_grad` + `nnx.Optimizer.update`), so they include NNX's "
    "Python overhead per call; their compile figure is the first call, with no XLA memory "
    "figure. The wrappers do not all train the same model (checked on flax "
    "{flax} and equinox {equinox}): `flax.nnx.SpectralNorm` and `flax.nnx.WeightNorm` write "
    "the normalised kernel back into the layer's `kernel` Param at every call (the raw value "
    "is lost; the optimizer updates the normalised kernel), and `nnx.WeightNorm` keeps its "
    "scales in a plain dict, not in an `nnx.Param`, so `nnx.Optimizer` never trains them: "
    "every column keeps its initial norm (here the initial column norms; by default 1). "
    "`flax.linen.SpectralNorm` draws `u` at random and runs only `n_steps` power iterations "
    "per call, no warm-up (on a random 64x64 kernel its first call estimates sigma as 11.1 "
    "where it is 15.6, so the kernel it applies has spectral norm 1.40, not 1); here its `u` "
    "is set to parametrax's converged one. equinox's `SpectralNorm` warms up with 15 "
    "iterations at construction, as torch and parametrax do, and its `WeightNorm` trains "
    "`g` from the weight's norms, as parametrax does."
)


def peers_section(results: dict) -> list[str]:
    rows = []
    for e in results["workloads"]:
        lib = _find(e, W.PX)
        for r in e["runners"]:
            if lib is not None and r is not lib and _is_peer(r["name"]):
                rows.append(
                    f"| {e['title']} | {r['name']} | {_ms(r['median_s'])} | "
                    f"{_ms(lib['median_s'])} | {ratio(r, lib):.2f} |"
                )
    if not rows:
        return []
    m = results["machine"]
    return [
        "",
        "## Peers: flax's and equinox's wrappers, the NNX front",
        "",
        PEERS_NOTE.format(flax=m.get("flax", "?"), equinox=m.get("equinox", "?")),
        "",
        "| workload | implementation | ms / step | parametrax ms | × parametrax |",
        "|---|---|---:|---:|---:|",
        *rows,
    ]


def _is_peer(name: str) -> bool:
    return name.startswith(("flax.linen", "flax.nnx", "equinox", "parametrax nnx"))


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# parametrax benchmarks",
        "",
        "Generated by `python benchmarks/run.py`"
        + (" --quick" if results.get("quick") else "")
        + f" on {m['date']} in {results['total_s']:.0f} s. Do not edit by hand."
        + (
            " **Quick run: tiny sizes and XLA optimisations off (`"
            + QUICK_XLA_FLAGS
            + "`); it checks that the suite works, its figures mean nothing.**"
            if results.get("quick")
            else ""
        ),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m.get('ram_gb')} GB RAM, {m['os']}; "
        f"Python {m['python']}, JAX {m['jax']} ({m['jax_backend']}), flax {m['flax']}, "
        f"optax {m['optax']}"
        + (f", equinox {m['equinox']}" if "equinox" in m else "")
        + (f", PyTorch {m['torch']} ({m['torch_threads']} threads)" if "torch" in m else "")
        + f"; OpenBLAS threads: {m.get('openblas_threads', 'not recorded')}"
        + f". Load average (1 min) {results['load_start']:.2f} at the start, "
        f"{results['load_end']:.2f} at the end. Peak RSS of the whole run "
        f"{results['maxrss_mb']:.0f} MB.",
        "",
        "Method: one full training step (forward, backward, optimizer update, "
        "`block_until_ready`) per timing; the implementations of a workload run interleaved "
        "(round k rotates the order), warm-up and compilation excluded; each figure is the "
        f"median over {results['config']['rounds']} rounds of the mean step time within a "
        "round. A ratio of two implementations is the median of their per-round ratios "
        "(paired: a load spike from another process slows both members of a round's pair, "
        "where it would skew a ratio of medians). All implementations of a workload start "
        "from the same weights and batch; the "
        "losses of their first training steps agree (last column of the second table). "
        "`jax (hand-written)` is the same model in plain JAX with the constraint inlined and "
        "computed once per step: the zero-overhead limit. `flax + inline` is the unwrapped "
        "Flax model with the constraint computed by hand in the loss (what parametrax "
        "replaces): a gap between it and `jax (hand-written)` belongs to Flax, a gap between "
        "parametrax and it to parametrax. `torch` is `torch.nn.utils.parametrizations` as "
        "torch users run it, `torch + cached()` the same step under `parametrize.cached()`. "
        "Compile = trace + lower + XLA compile of the jitted step. XLA MB = arguments + "
        "outputs − aliased + temporaries of the compiled step (`compiled.memory_analysis()`).",
        "",
        "## Summary",
        "",
        "| workload | parametrax ms | flax + inline ms | hand-written JAX ms "
        "| parametrax / flax + inline | parametrax / JAX | torch ms (best) | torch / parametrax |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary_rows(results):
        lib, ref, t = r["lib"], r["ref"], r["torch_best"]
        name = r["title"] + (" *(flax, unparametrized)*" if lib["name"].startswith("flax") else "")
        inl = r["inline"]
        lines.append(
            f"| {name} | {_ms(lib['median_s'])} | "
            + (f"{_ms(inl['median_s'])} | " if inl else "— | ")
            + f"{_ms(ref['median_s'])} | "
            + (f"{r['ratio_inline']:.3f} | " if inl else "— | ")
            + f"{r['ratio']:.3f} | "
            + (
                f"{_ms(t['median_s'])} ({t['name'].replace('torch', '').strip() or 'plain'}) | "
                f"{ratio(t, lib):.2f} |"
                if t
                else "— | — |"
            )
        )
    lines += peers_section(results)
    lines += [
        "",
        "## Every implementation",
        "",
        "| workload | implementation | ms / step (median) | min–max ms "
        "| × hand-written JAX | compile s | XLA MB | first loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in results["workloads"]:
        ref = _find(e, W.JAX)
        for r in e["runners"]:
            lines.append(
                f"| {e['title']} | {r['name']} | {_ms(r['median_s'])} | "
                f"{_ms(r['min_s'])}–{_ms(r['max_s'])} | {ratio(r, ref):.2f} | "
                + (f"{r['compile_s']:.2f}" if r["compile_s"] is not None else "—")
                + " | "
                + (f"{r['mem_mb']:.1f}" if r["mem_mb"] is not None else "—")
                + f" | {r['loss0']:.6g} |"
            )
    if results["maps"]:
        names = list(next(iter(results["maps"].values())).keys())
        for v in results["maps"].values():
            names += [k for k in v if k not in names]
        lines += [
            "",
            "## Cost of one orthogonal map, forward + backward (ms)",
            "",
            "`value_and_grad` of `sum(Q(X) * W)` for an n×n `X` (no trivialization base). "
            "`[Skew, Cayley]` is the tutorial chain (`Cayley` uses parametrax's custom "
            "derivative); `jax solve` is the same map written with `jnp.linalg.solve` and "
            "differentiated by JAX; the `Orthogonal` maps follow torch's `orthogonal` "
            "(Cayley with A/2). `expm, reverse-only squarings (experiment)` is "
            "`benchmarks/expm_variants.py`: JAX's expm with the squarings in a dynamic "
            "loop under a custom VJP (same numbers; no forward mode, so not in the "
            "library).",
            "",
            "| map | " + " | ".join(f"n={n}" for n in results["maps"]) + " |",
            "|---|" + "---:|" * len(results["maps"]),
        ]
        for name in names:
            lines.append(
                f"| {name} | "
                + " | ".join(
                    _ms(v.get(name)) if v.get(name) is not None else "—"
                    for v in results["maps"].values()
                )
                + " |"
            )
    if results["compile"]:
        lines += [
            "",
            "## Compile time vs number of orthogonal layers (s)",
            "",
            f"A stack of `Dense(64)` layers, each kernel "
            f'`Orthogonal(map="{results["config"].get("compile_map", "matrix_exp")}")`; '
            "trace + lower + compile of one Adam training step.",
            "",
            "| layers | parametrax trace+lower | parametrax compile | parametrax total "
            "| hand-written total | ratio |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for d, v in results["compile"].items():
            p, j = v["parametrax"], v["jax (hand-written)"]
            lines.append(
                f"| {d} | {p['trace_lower_s']:.2f} | {p['compile_s']:.2f} | "
                f"{p['total_s']:.2f} | {j['total_s']:.2f} | "
                f"{p['total_s'] / j['total_s']:.2f} |"
            )
    if results.get("primitives"):
        lines += [
            "",
            "## Base operations: JAX vs torch (ms, forward + backward)",
            "",
            "The operations the workloads are built from, with no parametrization: "
            "`jax.grad` of `sum(op(a, b))` w.r.t. every input against torch's "
            "`backward()`, interleaved. Where torch is faster here, parametrax cannot be "
            "faster than torch on a workload dominated by that operation (W1 Cayley: the "
            "solve; W2: the recurrence; W3: the convolutions). Convolutions are W3's "
            "layers (4×4, stride 2, batch 64; NHWC in JAX, NCHW in torch); the RNN "
            "recurrence is W2 without the orthogonal map (`lax.scan` of a tanh cell "
            "against torch's fused `nn.RNN`).",
            "",
            "| operation | JAX ms | torch ms | torch / JAX |",
            "|---|---:|---:|---:|",
        ]
        for op, v in results["primitives"].items():
            t = v.get("torch")
            lines.append(
                f"| {op} | {_ms(v['jax'])} | {_ms(t)} | "
                + (f"{t / v['jax']:.2f} |" if t else "— |")
            )
    return "\n".join(lines) + "\n"


def chart(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    rows = summary_rows(results)
    ax = axes[0, 0]
    if rows:
        labels = [r["title"].replace(" orthogonal", "\northo").replace(" + ", "\n+ ") for r in rows]
        ys = range(len(rows))
        series = [
            ("parametrax (or flax)", [r["lib"]["median_s"] for r in rows], "C0"),
            ("hand-written JAX", [r["ref"]["median_s"] for r in rows], "C1"),
            (
                "torch, uncached",
                [r["torch_plain"]["median_s"] if r["torch_plain"] else 0 for r in rows],
                "C3",
            ),
            (
                "torch, best",
                [r["torch_best"]["median_s"] if r["torch_best"] else 0 for r in rows],
                "C2",
            ),
        ]
        h = 0.2
        for i, (name, vals, c) in enumerate(series):
            ax.barh(
                [y + (i - 1.5) * h for y in ys],
                [v * 1e3 for v in vals],
                height=h,
                label=name,
                color=c,
            )
        ax.set_yticks(list(ys))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("ms per training step (log)")
        ax.set_title("Training step, median")
        ax.legend(fontsize=8)
        ax = axes[0, 1]
        ax.barh(
            [y - 0.2 for y in ys],
            [r["ratio"] for r in rows],
            height=0.4,
            color="C1",
            label="parametrax / hand-written JAX",
        )
        ax.barh(
            [y + 0.2 for y in ys],
            [r["ratio_inline"] or 0 for r in rows],
            height=0.4,
            color="C0",
            label="parametrax / flax + inline",
        )
        ax.axvline(1.0, color="k", lw=1)
        ax.axvline(1.05, color="r", ls="--", lw=1, label="target 1.05")
        ax.set_yticks(list(ys))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("time ratio")
        ax.set_xlim(0.5, max(1.35, max(r["ratio"] for r in rows) + 0.05))
        ax.set_title("Overhead of the library")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax = axes[1, 0]
    if results["maps"]:
        ns = sorted(results["maps"])
        names = []
        for v in results["maps"].values():
            names += [k for k in v if k not in names]
        for name in names:
            pts = [(n, results["maps"][n][name]) for n in ns if name in results["maps"][n]]
            style = "--" if name.startswith("torch") else "-"
            ax.plot([p[0] for p in pts], [p[1] * 1e3 for p in pts], style, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n")
        ax.set_ylabel("ms, forward + backward")
        ax.set_title("Orthogonal maps (dashed: torch)")
        ax.legend(fontsize=7)
    ax = axes[1, 1]
    if results["compile"]:
        ds = sorted(results["compile"])
        for name in ("parametrax", "jax (hand-written)"):
            ax.plot(
                ds, [results["compile"][d][name]["total_s"] for d in ds], marker="o", label=name
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("orthogonal layers")
        ax.set_ylabel("s, trace + lower + compile")
        ax.set_title("Compile time vs model size")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"parametrax benchmarks — {results['machine']['cpu']}, "
        f"{results['machine']['cores']} cores, JAX {results['machine']['jax']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: The line after which ``results.md`` holds sections measured by other scripts
#: (``grouped.py``, ``expm_variants.py``, ``eager_reads.py``, ``cayley_rate.py``), kept as they are
#: when this script rewrites the file.
KEEP_MARKER = (
    "<!-- Sections below are measured by other scripts; run.py keeps them as they are. -->"
)


def _kept_sections(path: pathlib.Path) -> str:
    """The marker line and everything after it in an existing ``path`` (or nothing)."""
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find(KEEP_MARKER)
    return "" if at < 0 else "\n" + text[at:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, few rounds (< 1 min)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    ap.add_argument(
        "--no-peers",
        action="store_true",
        help="skip flax's and equinox's own wrappers and parametrax's NNX front",
    )
    ap.add_argument(
        "--only", default=None, help="comma-separated subset of W1,W2,W3,W4,maps,compile,primitives"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="interleaved rounds per workload (default 7; --quick 3): fewer for a "
        "check that the figures are sane, not for the record",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite results.md and results.png from an existing results.json",
    )
    ap.add_argument(
        "--out",
        default=None,
        help="output folder (default: benchmarks/, or benchmarks/_quick/ with --quick)",
    )
    args = ap.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.rounds is not None:
        cfg["rounds"] = args.rounds
    only = set(args.only.split(",")) if args.only else None
    out = pathlib.Path(args.out) if args.out else (HERE / "_quick" if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        results = json.loads((out / "results.json").read_text())
        for k in ("maps", "compile"):  # JSON made the integer keys strings
            results[k] = {int(n): v for n, v in results[k].items()}
    else:
        results = run(cfg, torch_ok=not args.no_torch, only=only, peers=not args.no_peers)
        results["quick"] = args.quick
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "results.md").write_text(markdown(results) + _kept_sections(out / "results.md"))
    try:
        chart(results, out / "results.png")
    except ImportError:
        progress("matplotlib not installed: no chart (pip install -e '.[examples]')")
    progress(f"wrote {out / 'results.md'} in {results['total_s']:.0f} s")
    for r in summary_rows(results):
        extra = f", / flax + inline = {r['ratio_inline']:.3f}" if r["ratio_inline"] else ""
        progress(f"  {r['title']}: parametrax / hand-written JAX = {r['ratio']:.3f}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
