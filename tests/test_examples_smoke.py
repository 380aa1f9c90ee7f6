"""Fast smoke tests of the long examples (tiny settings via flags).

Each example also runs with its defaults from the README; these runs only check that the
scripts work end to end (training, reporting, plotting) in a few seconds each.
"""

import importlib.util

import pytest

from _helpers import run_script

needs_examples_extra = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("matplotlib", "tqdm")),
    reason="needs the `examples` extra (pip install -e '.[examples]')",
)


def run(script: str, *args: str) -> str:
    return run_script(script, *args, timeout=120, fast_compile=True)


@needs_examples_extra
def test_copy_task_smoke(tmp_path):
    png = tmp_path / "copy.png"
    out = run(
        "examples/copy_task.py",
        "--L",
        "5",
        "--K",
        "3",
        "--hidden",
        "8",
        "--batch",
        "4",
        "--steps",
        "20",
        "--models",
        "cayley,lstm",
        "--retract-every",
        "10",
        "--quiet",
        "--out",
        str(png),
    )
    assert "baseline" in out
    for kind in ("cayley", "lstm"):
        assert f"{kind}: final loss" in out
    assert png.stat().st_size > 0


@needs_examples_extra
def test_sngan_2d_smoke(tmp_path):
    png = tmp_path / "gan.png"
    out = run(
        "examples/sngan_2d.py",
        "--steps",
        "20",
        "--batch",
        "16",
        "--width",
        "16",
        "--samples",
        "200",
        "--quiet",
        "--out",
        str(png),
    )
    assert "spectral norm:" in out and "plain:" in out and "/8 modes" in out
    assert png.stat().st_size > 0


@needs_examples_extra
@pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn (the `examples` extra)"
)
def test_weight_norm_classifier_smoke(tmp_path):
    png = tmp_path / "wn.png"
    out = run(
        "examples/weight_norm_classifier.py",
        "--steps",
        "2",
        "--width",
        "16",
        "--quiet",
        "--out",
        str(png),
    )
    assert "weight norm: final training loss" in out and "test accuracy" in out
    assert png.stat().st_size > 0


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("sklearn", "equinox")),
    reason="needs scikit-learn and equinox (the `examples` extra)",
)
def test_equinox_digits_smoke():
    # Short run: the constraint, baking and state checks must hold; accuracy is not asked for.
    out = run("examples/equinox_digits.py", "--steps", "30", "--min-accuracy", "0")
    assert "OK" in out.splitlines()[-1], out
