"""The benchmark suite still runs end to end (``benchmarks/run.py --quick``, ~40 s).

Its figures mean nothing at these sizes; what is checked is that every part runs and that
every implementation of every workload (parametrax, hand-written JAX, Flax with the constraint
inlined, torch when installed) starts from the same loss: the suite's own cross-check that the
models it times are the same model.
"""

import importlib.util
import json

from _helpers import run_script

HAVE_TORCH = importlib.util.find_spec("torch") is not None


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
    for section in ("## Summary", "## Every implementation", "## Cost of one orthogonal map",
                    "## Compile time", "## Base operations"):
        assert section in md
