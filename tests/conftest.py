"""Shared test configuration.

Suites that need a different JAX process configuration live in their own folders and are run
in a subprocess by ``tests/test_subprocess_suites.py``:

* ``tests/x64/``: float64 tests, run with ``JAX_ENABLE_X64=1``;
* ``tests/multidevice/``: sharding tests, run with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=8``.

They are skipped from the main collection unless their environment is set. Both load this file
too (they live below it), so they share its configuration:

* strict dtype promotion (as equinox's tests run): the library must cast explicitly wherever
  dtypes differ. A test that mixes dtypes on purpose casts, or opens a local
  ``jax.numpy_dtype_promotion("standard")`` with a comment saying why; optax's own step is let
  through by ``_helpers.standard_promotion``;
* warnings are errors (``filterwarnings`` in pyproject.toml, which lists each third-party
  warning let through and where it comes from).
"""

import os

# JAX's CPU LU and triangular solves run through scipy's OpenBLAS, whose default threads fight
# XLA's (and the other pytest-xdist worker's) for the cores: LU-based maps ran 2-300x slower on
# shared CPUs (benchmarks/blas_threads.py). scipy is not loaded yet here, and xdist workers
# inherit this environment. An explicit setting is left as set.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import pytest

# An explicit JAX_NUMPY_DTYPE_PROMOTION (e.g. "standard", to compare) is left as set.
if "JAX_NUMPY_DTYPE_PROMOTION" not in os.environ:
    jax.config.update("jax_numpy_dtype_promotion", "strict")

collect_ignore_glob = []
if os.environ.get("JAX_ENABLE_X64", "").lower() not in ("1", "true"):
    collect_ignore_glob.append("x64/*")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    collect_ignore_glob.append("multidevice/*")


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches_per_module():
    """Drops JAX's compiled executables after each test module. The suite compiles thousands of
    programs in one process; with all of them kept, XLA's CPU compiler crashed late in the run
    (a segfault inside backend_compile_and_load, twice, never reproducible in isolation)."""
    yield
    import jax

    jax.clear_caches()
