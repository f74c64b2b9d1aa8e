"""What a benchmark ran on: the machine, the libraries, convkit's version, the matmul peak,
and the thread pools that decide how many cores a call uses.

Benchmark results are only comparable with the context they were measured in, so the
harness records it alongside them (:func:`machine_info`, :func:`convkit_source`,
:func:`thread_pools`) and scales speeds by what this machine's BLAS reaches on a large
square matrix product (:func:`matmul_peak`) and a large copy (:func:`copy_bandwidth`).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import convkit
from convkit.idle_threads import blas_idle_spin

#: Side of the square matrices whose product measures the peak.
PEAK_MATRIX_SIZE = 1024
#: Other processes keeping more cores than this busy make timings unreliable.
BUSY_CORES = 0.2


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds all processes on the machine have used, CPU seconds this process and
    its finished children have used), or None where ``/proc/stat`` does not exist."""
    try:
        import resource  # POSIX only

        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (ImportError, OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle and iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # up to steal, not guests
    own = sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF),
                      resource.getrusage(resource.RUSAGE_CHILDREN))
    )
    return busy, own


def background_load(
    before: tuple[float, float] | None, after: tuple[float, float] | None, seconds: float
) -> float | None:
    """How many of the machine's cores other processes kept busy, on average, between two
    :func:`cpu_seconds` snapshots ``seconds`` apart (None if unknown)."""
    if before is None or after is None or seconds <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / seconds)


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None; never imports it."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def blas_libraries() -> list[dict]:
    """The BLAS libraries loaded in this process (threadpoolctl's view of numpy's BLAS)."""
    return [
        {
            "library": info.get("internal_api"),
            "version": info.get("version"),
            "threading": info.get("threading_layer"),
            "architecture": info.get("architecture"),
        }
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]


def machine_info() -> dict:
    """The machine and library versions, as JSON-ready values."""
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": package_version("numba"),
        "torch": package_version("torch"),
        "blas": blas_libraries(),
        "blas_idle_spin": blas_idle_spin(),
    }


def convkit_source() -> dict:
    """convkit's version and, when it runs from a git checkout, the commit and whether the
    work tree had uncommitted changes (``dirty``); both None otherwise."""
    package_dir = Path(convkit.__file__).resolve().parent
    commit, dirty = None, None
    try:
        top = _git(package_dir, "rev-parse", "--show-toplevel")
        if Path(top).resolve() == package_dir.parent:  # a checkout of convkit itself
            commit = _git(package_dir, "rev-parse", "HEAD")
            dirty = bool(_git(package_dir, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass
    return {"version": convkit.__version__, "commit": commit, "dirty": dirty}


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def matmul_peak(dtype: str, threads: int, seconds: float = 0.5) -> float:
    """The best GFLOP/s of a ``PEAK_MATRIX_SIZE``-square matrix product in ``dtype`` on
    ``threads`` BLAS threads, over about ``seconds`` of repeats (the best, since other
    load on the machine only ever slows a run down)."""
    n = PEAK_MATRIX_SIZE
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype)
    best = float("inf")
    with threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(a, b, out=out)  # warm-up: BLAS starts its threads
        deadline = time.perf_counter() + seconds
        for _ in range(1000):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - start)
            if start > deadline:
                break
    return 2 * n**3 / best / 1e9


#: Bytes of the array :func:`copy_bandwidth` copies: far larger than any cache.
BANDWIDTH_ARRAY_BYTES = 256 * 2**20


def copy_bandwidth(seconds: float = 0.3) -> float:
    """The best GB/s (1e9 bytes, read plus written) of copying a
    ``BANDWIDTH_ARRAY_BYTES`` array, over about ``seconds`` of repeats: the memory-bandwidth
    roof of a roofline plot (numpy copies on one thread)."""
    n = BANDWIDTH_ARRAY_BYTES // 8
    source = np.ones(n)
    target = np.empty(n)
    np.copyto(target, source)  # warm-up: the pages are mapped
    best = float("inf")
    deadline = time.perf_counter() + seconds
    for _ in range(100):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
        if start > deadline:
            break
    return 2 * source.nbytes / best / 1e9


def thread_pools() -> dict[str, int]:
    """Threads each thread pool loaded in this process uses: BLAS and OpenMP libraries (by
    library file prefix), numba and torch."""
    pools = {info["prefix"]: info["num_threads"] for info in threadpool_info()}
    for name in ("numba", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            pools[name] = module.get_num_threads()
    return pools
