"""Runs the suites that need their own JAX process (float64, 8 host devices, XLA's default
optimisation level)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


def _run(folder: str, extra_env: dict) -> None:
    files = sorted((HERE / folder).glob("test_*.py"))
    if not files:
        pytest.skip(f"no tests in tests/{folder}")
    env = dict(os.environ, **extra_env)
    proc = subprocess.run(
        # one process (-n 0): the outer run's workers already use every core, and each extra
        # worker would import jax, flax and torch again
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            *map(str, files),
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=HERE.parent,
    )
    assert proc.returncode == 0, (
        f"tests/{folder} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    )


def test_float64_suite():
    _run("x64", {"JAX_ENABLE_X64": "1"})


def test_default_xla_suite():
    # XLA's default optimisation level, as users compile: this run's level-0 flag is dropped
    flags = re.sub(r"--xla_backend_optimization_level=\S+", "", os.environ.get("XLA_FLAGS", ""))
    _run("default_xla", {"PARAMETRAX_TEST_XLA_OPT": "default", "XLA_FLAGS": flags.strip()})


def test_multidevice_suite():
    _run("multidevice", {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
