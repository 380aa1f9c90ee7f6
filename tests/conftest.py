"""Shared test configuration.

Suites that need a different JAX process configuration live in their own folders and are run
in a subprocess by ``tests/test_subprocess_suites.py``:

* ``tests/x64/``: float64 tests, run with ``JAX_ENABLE_X64=1``;
* ``tests/multidevice/``: sharding tests, run with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=8``;
* ``tests/default_xla/``: tests whose claim depends on XLA's default code generation (grouped
  evaluation is a bit-for-bit copy of evaluating each variable alone, as users compile it),
  run with ``PARAMETRAX_TEST_XLA_OPT=default`` (the main run compiles at optimisation level 0,
  see below, where a batched and an unbatched kernel may round one ulp apart).

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

# XLA's CPU backend at optimisation level 0 (LLVM without its optimisation pipeline): the suite
# is compile-bound (about a second of XLA compilation per test, for programs that then run for
# microseconds), and level 0 takes about a third less CPU over the whole run (31 -> 22 CPU
# minutes; a clean-clone CI's pytest 1023 s -> 808 s on two workers). XLA's own passes (fusion,
# layout, algebraic simplification) are unchanged, so the operations tested are the same; the
# machine code is slower, and may round an ulp differently where LLVM would have reordered
# (claims of bit-for-bit equality are tested at the default level: tests/default_xla/).
# Benchmarks and users compile at the default level. An XLA_FLAGS that sets the level itself is
# left as set; PARAMETRAX_TEST_XLA_OPT=default keeps XLA's default level.
if (level := os.environ.get("PARAMETRAX_TEST_XLA_OPT", "0")) != "default" and (
    "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")
):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_backend_optimization_level={level}"
    ).strip()

# One persistent compilation cache for the whole run: the pytest-xdist workers and the subprocess
# suites inherit this environment, so a program one process compiled (the same map on the same
# shape in another test module, after `_fresh_jax_caches_per_module` dropped it, or on the other
# worker) is read back instead of compiled again. Every program is kept (no minimum compile time
# or size). A fresh directory per run, removed when the run ends; nothing is kept between runs.
# Measured on tests/test_contract.py + tests/test_manifolds.py, two workers, two A/B runs: 6% and
# 18% less CPU time. An explicit JAX_COMPILATION_CACHE_DIR is left as set (and then not removed);
# PARAMETRAX_TEST_COMPILE_CACHE=0 turns this off.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and (
    os.environ.get("PARAMETRAX_TEST_COMPILE_CACHE") != "0"
):
    import atexit
    import shutil
    import tempfile

    _cache_dir = tempfile.mkdtemp(prefix="parametrax-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

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
if os.environ.get("PARAMETRAX_TEST_XLA_OPT") != "default":
    collect_ignore_glob.append("default_xla/*")


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches_per_module():
    """Drops JAX's compiled executables after each test module. The suite compiles thousands of
    programs in one process; with all of them kept, XLA's CPU compiler crashed late in the run
    (a segfault inside backend_compile_and_load, twice, never reproducible in isolation)."""
    yield
    import jax

    jax.clear_caches()


def pytest_collection_modifyitems(config, items):
    """The longest tests first (the two subprocess suites: about a minute and a half each, in one
    process): pytest-xdist hands tests out from the front, so they start at once on different
    workers instead of running alone at the end of the run."""
    # a stable sort: the subprocess suites first, everything else in its collected order
    items.sort(key=lambda it: not it.nodeid.startswith("tests/test_subprocess_suites.py"))
