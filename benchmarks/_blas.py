"""Pin OpenBLAS to one thread before JAX (and numpy) load it; import this first.

On a CPU shared with other jobs, OpenBLAS's default pool (one thread per core, busy-waiting)
makes JAX's LU-based maps (Cayley, solves) several times slower and their timings erratic
(``docs/benchmarks.md``, "Performance notes"). The benchmark scripts therefore set
``OPENBLAS_NUM_THREADS=1`` themselves. To benchmark another setting, set
``PARAMETRAX_BENCH_BLAS_THREADS``: a number of threads, or ``default`` to leave
``OPENBLAS_NUM_THREADS`` as the environment has it (unset: OpenBLAS's own default).

``machine()`` describes the machine a benchmark ran on (CPU, cores, memory, load, the BLAS
setting chosen here): the one place the scripts take their "Machine:" line from.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import sys

OVERRIDE = "PARAMETRAX_BENCH_BLAS_THREADS"
SETTING: str | None = None  # what pin_blas_threads() chose in this process


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
    global SETTING
    want = os.environ.get(OVERRIDE, "1").strip()
    if want == "default":
        SETTING = os.environ.get("OPENBLAS_NUM_THREADS", "default")
        return SETTING
    if not want.isdigit() or int(want) < 1:
        raise ValueError(
            f"{OVERRIDE} must be a positive number of threads or 'default'; got {want!r}."
        )
    os.environ["OPENBLAS_NUM_THREADS"] = want
    SETTING = want
    return want


def machine(**versions: str) -> dict:
    """The machine a benchmark runs on: CPU model, cores, memory, 1-minute load average (a
    shared machine's timings depend on it), OS, Python, the OpenBLAS setting of this process and
    the UTC date; ``versions`` (e.g. ``jax=jax.__version__``) are added as given."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": mem_gb,
        "load1": load,
        "os": platform.platform(),
        "python": platform.python_version(),
        **versions,
        "openblas_threads": SETTING
        if SETTING is not None
        else os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
