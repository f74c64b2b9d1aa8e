"""Measuring one row (one case x operation on one backend) inside a worker process.

How a row is measured (:class:`Measurement`):

1. The backend's ``prepare`` (``auto`` measures its candidates there; ``prepare_s``), then
   a warm-up call, timed on its own (``first_call_s``: numba's compilation lands here,
   never in a timing). A budgeted (naive) backend's warm-up must finish within its budget,
   or the case is skipped for it.
2. Measurements, with the garbage collector off: each calls back to back until ``min_time``
   seconds have passed and gives the time per call (:func:`measure_calls`). Each measurement
   runs on a fresh copy of the inputs at a random offset (:func:`placed`): where an array
   lies in memory was measured changing one PyTorch depthwise forward 6x (2.1 against
   13.3 ms, same data, same alignment), so a row samples placements instead of reporting
   the luck of one.
3. One more call, untimed, under :mod:`tracemalloc`: the peak bytes allocated during the
   call (result included). Allocations that bypass Python's and numpy's allocators are
   invisible to it: when the result's memory belongs to another library (a torch tensor)
   or the traced peak is smaller than the result itself, the row says ``None`` (n/a)
   rather than a wrong number (:func:`traced_call`).
4. That call's result against the float64 reference the parent computed: the largest
   absolute error, and that error relative to the bound the backend declares
   (:func:`convkit.workload.declared_bound_of`: the direct-sum bound for an exact backend,
   scaled and widened for a fast one; above 1 means a wrong result, and the row is an
   error).
"""

from __future__ import annotations

import contextlib
import gc
import signal
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from convkit.backend import ConvBackend
from convkit.bench.results import BUDGETED_BACKENDS, BenchSettings, Row
from convkit.errors import UnsupportedConfigurationError
from convkit.workload import (
    BACKEND_METHODS,
    ConvArrays,
    ConvCase,
    Operation,
    declared_bound_of,
    run_operation,
)

#: Offsets of :func:`placed` are multiples of this many bytes (a cache line), below
#: ``PLACEMENT_RANGE``: they move an array against the 4 KiB page and cache-set boundaries.
PLACEMENT_STEP = 64
PLACEMENT_RANGE = 4096


class _OverBudget(Exception):
    pass


class Measurement:
    """One row in the making: :meth:`start` (the warm-up call), :meth:`time_once` per round,
    then :meth:`finish` (medians, memory, error). A failure at any step ends the row with
    status skipped or error and the reason; later steps then do nothing."""

    def __init__(
        self, backend: ConvBackend, case: ConvCase, op: Operation, settings: BenchSettings
    ) -> None:
        self.row = Row(case.name, op, backend.name)
        self.settings = settings
        self.budget = settings.naive_budget if backend.name in BUDGETED_BACKENDS else None
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.over_budget = False
        self._call: Callable[[], np.ndarray] | None = None
        self._calls = 0
        self._backend, self._case = backend, case
        self._rng = np.random.default_rng()  # unseeded: every run draws other placements

    @property
    def running(self) -> bool:
        return self.row.status == "ok" and self._call is not None

    def start(self) -> None:
        """The warm-up call (within the budget, if any)."""
        backend, case, op = self._backend, self._case, self.row.op
        reason = backend.capabilities.unsupported_reason(case.geometry(self.settings.dtype))
        if reason is not None:
            self.end("skipped", reason)
            return
        self._arrays = self._placed = case.arrays(self.settings.dtype)

        def call() -> np.ndarray:
            return run_operation(op, self._placed, case, backend.name)

        def warm_up() -> None:
            start = time.perf_counter()
            backend.prepare(case.geometry(self.settings.dtype), BACKEND_METHODS[op])
            self.row.prepare_s = time.perf_counter() - start
            self.row.first_call_s = _first_call(call, self.budget)
            self._call = call

        self._attempt(warm_up)

    def time_once(self) -> None:
        """One measurement, on a fresh placement of the inputs: calls back to back until
        ``min_time`` has passed."""
        if self.running:
            self._placed = placed(self._arrays, self._rng)
            call = self._call
            self._attempt(lambda: self._add(*measure_calls(call, self.settings.min_time)))

    def _add(self, seconds_per_call: float, cpu_seconds_per_call: float, calls: int) -> None:
        self.times.append(seconds_per_call)
        self.cpu_times.append(cpu_seconds_per_call)
        self._calls += calls

    def finish(self, reference: Path | None) -> Row:
        """Medians, then memory and error from one more call; ``reference`` is an ``.npz``
        from :func:`convkit.bench.runner.write_references` (None: no error column)."""
        if not self.running:
            return self.row
        row = self.row
        row.median_s, row.min_s = statistics.median(self.times), min(self.times)
        row.cpu_median_s = statistics.median(self.cpu_times)
        row.calls, row.repeats = self._calls, len(self.times)
        outcome: list[np.ndarray] = []
        call = self._call

        def traced() -> None:
            result, row.memory_bytes = traced_call(call)
            if row.memory_bytes is not None:  # and what the backend keeps between calls
                row.memory_bytes += self._backend.retained_bytes()
            outcome.append(result)

        self._attempt(traced)
        if outcome and reference is not None:
            self._attempt(lambda: self._check_error(outcome[0], reference))
        return row

    def _check_error(self, result: np.ndarray, reference: Path) -> None:
        """The largest error against the reference, absolute and relative to the bound; the
        row is an error beyond the bound. An empty result (an empty batch) has none."""
        row = self.row
        capabilities = self._backend.capabilities
        with np.load(reference) as ref:
            err = np.abs(result.astype(np.float64) - ref["reference"])
            bound = declared_bound_of(ref["sums"], int(ref["terms"]), np.dtype(result.dtype),
                                      capabilities.error_factor, capabilities.error_spread)
            row.max_abs_error = float(err.max(initial=0.0))
            row.error_vs_bound = float((err / bound).max(initial=0.0))
        if not row.error_vs_bound <= 1:  # also NaN
            self.end(
                "error",
                f"wrong result: max error {row.max_abs_error:.3g} is "
                f"{row.error_vs_bound:.3g}x the {self.settings.dtype} error bound",
            )

    def end(self, status: str, reason: str) -> None:
        self.row.status, self.row.reason = status, reason

    def _attempt(self, step: Callable[[], None]) -> None:
        try:
            step()
        except _OverBudget:
            self.over_budget = True
            self.end("skipped",
                     f"one call takes over {self.budget:g} s, the budget for {self.row.backend}")
        except UnsupportedConfigurationError as exc:
            self.end("skipped", str(exc))
        except Exception as exc:  # a failing backend is a result, not a crash of the run
            self.end("error", f"{type(exc).__name__}: {exc}")

def measure_row(
    backend: ConvBackend,
    case: ConvCase,
    op: Operation,
    settings: BenchSettings,
    reference: Path | None,
) -> Row:
    """Measure ``op`` of ``case`` on ``backend`` on its own (see the module docstring)."""
    m = Measurement(backend, case, op, settings)
    m.start()
    for _ in range(settings.repeats):
        m.time_once()
    return m.finish(reference)

def placed(arrays: ConvArrays, rng: np.random.Generator) -> ConvArrays:
    """Copies of ``arrays`` in fresh buffers, each at a random offset of
    ``PLACEMENT_STEP``-byte steps below ``PLACEMENT_RANGE`` from the buffer's start."""

    def one(a: np.ndarray) -> np.ndarray:
        offset = PLACEMENT_STEP * int(rng.integers(PLACEMENT_RANGE // PLACEMENT_STEP))
        buffer = np.empty(a.nbytes + PLACEMENT_RANGE, np.uint8)
        copy = buffer[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
        copy[...] = a
        return copy

    return ConvArrays(one(arrays.x), one(arrays.weight), one(arrays.grad_output))


def _first_call(call: Callable[[], object], budget: float | None) -> float:
    """Seconds the first call took; raises _OverBudget past ``budget`` seconds."""
    start = time.perf_counter()
    with _time_limit(budget):
        call()
    elapsed = time.perf_counter() - start
    if budget is not None and elapsed > budget:
        raise _OverBudget
    return elapsed

@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (SIGALRM; Python code only, main thread only)."""
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise _OverBudget

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

def measure_calls(call: Callable[[], object], min_time: float) -> tuple[float, float, int]:
    """Call back to back, garbage collector off, until ``min_time`` seconds have passed.

    Returns (seconds per call, CPU seconds of this process per call, calls). Checking the
    clock after each call keeps a measurement near ``min_time`` however the machine's load
    changes, unlike a call count calibrated beforehand.
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        calls = 0
        cpu_start = time.process_time()
        start = now = time.perf_counter()
        while now - start < min_time:
            call()
            calls += 1
            now = time.perf_counter()
        return (now - start) / calls, (time.process_time() - cpu_start) / calls, calls
    finally:
        if gc_was_enabled:
            gc.enable()

def traced_call(call: Callable[[], np.ndarray]) -> tuple[np.ndarray, int | None]:
    """``call()``'s result and the peak bytes traced while it ran, or None for a result
    whose memory tracemalloc cannot see (owned by another library, e.g. a torch tensor)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = call()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        if not was_tracing:
            tracemalloc.stop()
    # The result was allocated during the call: seeing less means allocations were hidden.
    visible = _numpy_owned(result) and peak >= result.nbytes
    return result, (peak if visible else None)


def _numpy_owned(a: np.ndarray) -> bool:
    """Whether ``a``'s memory was allocated by numpy (and so reported to tracemalloc)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a.base is None
