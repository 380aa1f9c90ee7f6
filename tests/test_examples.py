"""Smoke tests: the examples run to completion (each asserts its own claims)."""

from _helpers import run_script


def test_tutorial():
    out = run_script("examples/tutorial.py")
    assert "All tutorial claims hold." in out
    assert out.count("[ok]") >= 15
