"""Pin OpenBLAS to one thread before JAX (and numpy) load it; import this first.

On a CPU shared with other jobs, OpenBLAS's default pool (one thread per core, busy-waiting)
makes JAX's LU-based maps (Cayley, solves) several times slower and their timings erratic
(``docs/benchmarks.md``, "Performance notes"). The benchmark scripts therefore set
``OPENBLAS_NUM_THREADS=1`` themselves. To benchmark another setting, set
``PARAMETRAX_BENCH_BLAS_THREADS``: a number of threads, or ``default`` to leave
``OPENBLAS_NUM_THREADS`` as the environment has it (unset: OpenBLAS's own default).
"""

from __future__ import annotations

import os
import sys

OVERRIDE = "PARAMETRAX_BENCH_BLAS_THREADS"


def pin_blas_threads() -> str:
    """Set ``OPENBLAS_NUM_THREADS`` for this process and its children; return the setting
    (a number, or ``"default"``). Refuses to run after numpy or jax has been imported: OpenBLAS
    reads the variable once, when it is loaded."""
    loaded = [m for m in ("numpy", "jax", "jaxlib", "scipy") if m in sys.modules]
    if loaded:
        raise RuntimeError(
            f"pin_blas_threads() must run before {', '.join(loaded)} is imported: OpenBLAS "
            "reads OPENBLAS_NUM_THREADS once, when it is loaded."
        )
    want = os.environ.get(OVERRIDE, "1").strip()
    if want == "default":
        return os.environ.get("OPENBLAS_NUM_THREADS", "default")
    if not want.isdigit() or int(want) < 1:
        raise ValueError(
            f"{OVERRIDE} must be a positive number of threads or 'default'; got {want!r}."
        )
    os.environ["OPENBLAS_NUM_THREADS"] = want
    return want
