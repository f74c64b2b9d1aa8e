"""numba's compile time per kernel, and the cost of loading a compiled kernel from its cache.

How it is measured: a fresh Python process with ``NUMBA_CACHE_DIR`` pointing at an empty
temporary directory imports convkit and the numba backend (not timed), then times the first
call of one operation on a tiny float32 layer. Nothing is cached and nothing was compiled in
that process, so the first call is a real compilation (plus a few microseconds of
convolution). A second fresh process with the same, now filled, cache directory times the
same first call again: that is the cached load every later process pays. The processes run
in ``setup_cache``; the ``track_`` benchmarks only report the seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from convkit import list_backends

from .common import DTYPE, OPERATION_NAMES

_FIRST_CALL = """
import sys, time
import convkit
from convkit.workload import ConvCase, run_operation
convkit.get_backend("numba")
case = ConvCase("compile", (1, 2, 5, 5), (2, 2, 3, 3), padding=1)
arrays = case.arrays(sys.argv[2])
start = time.perf_counter()
run_operation(sys.argv[1], arrays, case, "numba")
print(time.perf_counter() - start)
"""


def first_call_seconds(operation: str, cache_dir: str) -> float:
    """Seconds the first numba call of ``operation`` takes in a new process using ``cache_dir``."""
    result = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL, operation, DTYPE],
        env={**os.environ, "NUMBA_CACHE_DIR": cache_dir},
        capture_output=True, text=True, check=True,
    )
    return float(result.stdout.split()[-1])


class NumbaCompile:
    """First call of each numba kernel (float32): compiled from scratch, and loaded from cache."""

    params = (OPERATION_NAMES,)
    param_names = ("operation",)
    timeout = 300

    def setup_cache(self) -> dict[str, dict[str, float]]:
        if "numba" not in list_backends():
            return {}
        seconds = {}
        for operation in OPERATION_NAMES:
            with tempfile.TemporaryDirectory(prefix="convkit-numba-cache-") as cache_dir:
                seconds[operation] = {
                    "compile": first_call_seconds(operation, cache_dir),
                    "cached": first_call_seconds(operation, cache_dir),
                }
        return seconds

    setup_cache.timeout = 300  # type: ignore[attr-defined]

    def setup(self, seconds: dict[str, dict[str, float]], operation: str) -> None:
        if operation not in seconds:
            raise NotImplementedError("this commit has no numba backend")

    def track_compile_seconds(self, seconds: dict[str, dict[str, float]], operation: str) -> float:
        return seconds[operation]["compile"]

    track_compile_seconds.unit = "seconds"  # type: ignore[attr-defined]

    def track_cached_load_seconds(
        self, seconds: dict[str, dict[str, float]], operation: str
    ) -> float:
        return seconds[operation]["cached"]

    track_cached_load_seconds.unit = "seconds"  # type: ignore[attr-defined]
