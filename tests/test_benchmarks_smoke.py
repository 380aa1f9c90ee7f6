"""The benchmark suite still runs end to end (``benchmarks/run.py --quick``, ~40 s).

Its figures mean nothing at these sizes; what is checked is that every part runs and that
every implementation of every workload (parametrax, hand-written JAX, Flax with the constraint
inlined, torch when installed) starts from the same loss: the suite's own cross-check that the
models it times are the same model.
"""

import importlib.util
import json

import jax
import pytest

from _helpers import run_script

HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.slow  # about a minute of compilation on 2 cores: `python -m pytest -m slow`
def test_benchmark_suite_quick(tmp_path):
    run_script("benchmarks/run.py", "--quick", "--out", str(tmp_path), timeout=600)
    results = json.loads((tmp_path / "results.json").read_text())
    groups = {w["group"] for w in results["workloads"]}
    assert groups == {"W1", "W2", "W3", "W4"}
    for w in results["workloads"]:
        names = {r["name"] for r in w["runners"]}
        assert any(n.startswith("parametrax") for n in names), w["title"]
        assert any(n.startswith("jax (hand-written)") for n in names), w["title"]
        assert any(n.startswith("torch") for n in names) == HAVE_TORCH, w["title"]
        assert w["loss_gap"] <= 2e-4, (w["title"], w["loss_gap"])
        for r in w["runners"]:
            assert r["median_s"] > 0 and r["min_s"] <= r["median_s"] <= r["max_s"]
    assert results["maps"] and results["compile"] and results["primitives"]
    md = (tmp_path / "results.md").read_text()
    for section in (
        "## Summary",
        "## Every implementation",
        "## Cost of one orthogonal map",
        "## Compile time",
        "## Base operations",
    ):
        assert section in md


# ------------------------------------------------------------------------------------------------
# benchmarks/tall.py: the code path of --quick at tiny shapes, in this process (< 15 s)
# ------------------------------------------------------------------------------------------------
def _tall():
    """benchmarks/tall.py imported in this process. Its cells are user code whose optax adam step
    is not strict-clean (``decay ** count``, see ``_helpers.standard_promotion``): call them inside
    ``jax.numpy_dtype_promotion("standard")``."""
    import importlib  # noqa: PLC0415
    import pathlib  # noqa: PLC0415
    import sys  # noqa: PLC0415

    bench = str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module("tall")


TINY = {"rounds": 2, "round_s": 0.005, "batch": 4}


def _emitted(capsys):
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.startswith("{")]
    return [d["phase"] for d in lines], {k: v for d in lines for k, v in d.items()}


def test_tall_cell_orthogonal_in_process(capsys):
    tall = _tall()
    with jax.numpy_dtype_promotion("standard"):  # optax's adam inside the cell, see _tall
        tall.jax_cell("Orthogonal()", 24, 16, TINY, mem_bound_mb=8192)
    phases, out = _emitted(capsys)
    assert phases == ["registered", "compiled", "done"]
    assert out["finite"] and out["orth_err"] < 1e-5  # orthonormal columns after the steps
    assert out["step_ratio"] > 0 and out["step_s"] > 0 and out["plain_step_s"] > 0
    assert out["mem_mb"] > 0 and out["plain_mem_mb"] > 0


def test_tall_cell_xla_memory_bound_stops_the_cell(capsys):
    """A compiled step whose XLA estimate passes the bound is reported, not run."""
    tall = _tall()
    try:
        with jax.numpy_dtype_promotion("standard"):  # optax's adam inside the cell, see _tall
            tall.jax_cell("Orthogonal()", 24, 16, TINY, mem_bound_mb=1e-4)
    except SystemExit as e:
        assert e.code == 0
    else:
        raise AssertionError("jax_cell ran a step whose XLA memory passes the bound")
    phases, out = _emitted(capsys)
    assert phases == ["registered", "exceeded"]
    assert "XLA memory" in out["bound"]


def test_tall_cell_torch_in_process(capsys):
    if not HAVE_TORCH:
        import pytest  # noqa: PLC0415

        pytest.skip("torch not installed")
    tall = _tall()
    tall.torch_cell("torch orthogonal", 24, 16, TINY)
    phases, out = _emitted(capsys)
    assert phases == ["registered", "compiled", "done"]
    assert out["orth_err"] < 1e-5 and out["step_ratio"] > 0


def test_tall_watcher_reports_a_blown_bound():
    """A cell past its memory bound is killed and reported as exceeding it, not left out."""
    tall = _tall()
    c = tall.run_cell(
        "Orthogonal()", 24, 16, quick=True, register_bound=60, cell_bound=60, mem_bound_gb=1e-3
    )
    assert c["exceeded"].startswith("memory"), c
    cells = [
        c,
        {"method": "LowRank(16)", "n": 24, "k": 16, "error": "exit 1: boom", "peak_rss_mb": 1.0},
        {
            "method": "Stiefel()",
            "n": 24,
            "k": 16,
            "register_s": 0.5,
            "compile_s": 0.2,
            "step_s": 1e-3,
            "plain_step_s": 5e-4,
            "step_ratio": 2.0,
            "mem_mb": 2.0,
            "plain_mem_mb": 1.0,
            "peak_rss_mb": 300.0,
            "orth_err": 1e-7,
        },
    ]
    md = tall.markdown(
        {
            "machine": {
                "cpu": "cpu",
                "cores": 2,
                "python": "3",
                "jax": "0",
                "openblas_threads": "1",
                "date": "today",
            },
            "quick": True,
            "config": TINY,
            "total_s": 1.0,
            "cells": cells,
            "bounds": {"register_s": 60, "cell_s": 60, "mem_gb": 1e-3},
        }
    )
    rows = {r.split(" | ")[2]: r for r in md.splitlines() if r.startswith("| 24 |")}
    assert len(rows) == 3  # every cell has its row, blown or not
    assert "**exceeds bound** (memory" in rows["Orthogonal()"]
    assert "**failed** (exit 1: boom)" in rows["LowRank(16)"]
    assert "| 2.00 |" in rows["Stiefel()"] and "1.0e-07" in rows["Stiefel()"]
    # a cell not run (the budget), or not run because a smaller shape exceeded its bound, keeps
    # its row and says why
    md = tall.markdown(
        {
            "machine": {
                "cpu": "cpu",
                "cores": 2,
                "python": "3",
                "openblas_threads": "1",
                "date": "today",
            },
            "quick": False,
            "config": TINY,
            "total_s": 1.0,
            "cells": [
                {"method": "Stiefel()", "n": 48, "k": 16, "not_run": "budget spent"},
                {
                    "method": "Orthogonal()",
                    "n": 48,
                    "k": 16,
                    "exceeded": "cell > 1 s",
                    "inferred_from": [24, 16],
                },
            ],
            "bounds": {"register_s": 60, "cell_s": 1, "mem_gb": 1},
        }
    )
    rows = {r.split(" | ")[2]: r for r in md.splitlines() if r.startswith("| 48 |")}
    assert "**not run** (budget spent)" in rows["Stiefel()"]
    assert "exceeded cell > 1 s at 24 × 16" in rows["Orthogonal()"]


def test_tall_plan_and_inferred_bounds():
    """The full grid runs the priority cells first, smaller shapes before larger; a shape no
    smaller in n and k than one that exceeded a bound is known to exceed it."""
    tall = _tall()
    order = tall.plan([(1000, 16), (100000, 64), (30000, 50)], list(tall.METHODS))
    first = [c for c in order if c[0] in tall.PRIORITY_METHODS or (c[1], c[2]) in tall.TARGETS]
    assert order[: len(first)] == first and len(order) == 3 * len(tall.METHODS)
    assert [(n, k) for _, n, k in first] == sorted((n, k) for _, n, k in first)
    blown = [{"method": "Stiefel()", "n": 1000, "k": 16, "exceeded": "cell > 1 s"}]
    assert tall.dominated_by(blown, "Stiefel()", 30000, 50) is blown[0]
    assert tall.dominated_by(blown, "Stiefel()", 30000, 8) is None  # smaller k: unknown
    assert tall.dominated_by(blown, "Orthogonal()", 30000, 50) is None  # another method
