"""Wall time, GFLOP/s and peak memory of every backend, case and operation (float32).

Parameterised over backend x case x operation: the backends convkit registers, the cases of
``convkit.cases`` (the quick suite by default) and forward / input-grad / weight-grad, each
called through the public functional API. Every ``setup`` makes the call once first, so a
numba compilation or an index cache never lands in a measurement; numba's compile time is
its own benchmark (:mod:`benchmarks.bench_compile`).

The standard suite's larger layers take many minutes more per commit, so
:class:`ConvStandard` exists for asv only when ``CONVKIT_ASV_STANDARD=1`` is set::

    CONVKIT_ASV_STANDARD=1 asv run --bench ConvStandard "HEAD^!"
"""

from __future__ import annotations

import os

from asv_runner.benchmarks.mark import skip_benchmark_if

from .common import BACKENDS, OPERATION_NAMES, SUITE_CASES, Workload, warm_numba_cache

PARAM_NAMES = ("backend", "case", "operation")
STANDARD = os.environ.get("CONVKIT_ASV_STANDARD") == "1"


class Conv:
    """One call on the quick suite: its wall time and its throughput."""

    params = (BACKENDS, SUITE_CASES["quick"], OPERATION_NAMES)
    param_names = PARAM_NAMES
    _suite = "quick"
    warmup_time = 0.05  # setup has already made the first call
    repeat = (1, 5, 1.0)  # 1 to 5 samples per process, sampling stops after 1 s; 2 rounds
    timeout = 120

    def setup(self, backend: str, case: str, operation: str) -> None:
        self.work = Workload(backend, self._suite, case, operation)

    def time_op(self, backend: str, case: str, operation: str) -> None:
        self.work.run()

    def track_gflops(self, backend: str, case: str, operation: str) -> float:
        """Floating-point operations per second, in 1e9, of the fastest of a few calls."""
        return self.work.gflops()

    track_gflops.unit = "GFLOP/s"  # type: ignore[attr-defined]


class ConvStandard(Conv):
    """As :class:`Conv` on the standard suite; only with ``CONVKIT_ASV_STANDARD=1``."""

    params = (BACKENDS, SUITE_CASES["standard"], OPERATION_NAMES)
    _suite = "standard"
    repeat = (1, 5, 4.0)
    timeout = 300

    # Left out of asv's discovery, not skipped in setup: asv would start a process for each
    # of its 2 x 108 combinations just to skip it, about two minutes per commit.
    time_op = skip_benchmark_if(not STANDARD)(Conv.time_op)
    track_gflops = skip_benchmark_if(not STANDARD)(Conv.track_gflops)


class ConvMemory:
    """Peak resident memory (bytes) of a process that allocated a case's arrays and ran it.

    asv's ``peakmem_`` is the peak of the whole process: the interpreter, numpy, the
    backend's imports, the inputs allocated in ``setup`` and the call's own temporaries
    (im2col's columns, say). Compare a backend with itself across commits, or backends by
    their differences. ``setup_cache`` first compiles numba's kernels into numba's on-disk
    cache, so the numba figures contain a cached load and not a compilation (which alone
    peaks about 40 MB higher).
    """

    params = (BACKENDS, SUITE_CASES["quick"], OPERATION_NAMES)
    param_names = PARAM_NAMES
    timeout = 120

    def setup_cache(self) -> str:
        warm_numba_cache()
        return "numba kernels cached"  # asv passes this to setup and the benchmark

    setup_cache.timeout = 300  # type: ignore[attr-defined]

    def setup(self, _cached: str, backend: str, case: str, operation: str) -> None:
        self.work = Workload(backend, "quick", case, operation)

    def peakmem_op(self, _cached: str, backend: str, case: str, operation: str) -> None:
        self.work.run()
