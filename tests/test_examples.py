"""Smoke tests: the examples run to completion (each asserts its own claims)."""

import pathlib
import subprocess
import sys


ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_example(name: str, *args: str, timeout: int = 300) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_tutorial():
    out = run_example("tutorial.py")
    assert "All tutorial claims hold." in out
    assert out.count("[ok]") >= 15
