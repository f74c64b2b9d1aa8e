"""The benchmarking harness behind ``convkit bench``.

One *row* is one case x operation x backend. How a row is measured (:class:`Measurement`):

1. A warm-up call, timed on its own (``first_call_s``: numba's compilation lands here,
   never in a timing). The naive backend's warm-up must finish within its budget, or the
   case is skipped for it.
2. ``repeats`` measurements, with the garbage collector off: each calls back to back until
   ``min_time`` seconds have passed and gives the time per call. A worker takes them in
   rounds over all its rows, so a burst of load from elsewhere spoils one measurement of
   many rows, not many measurements of one row.
3. One more call, untimed, under :mod:`tracemalloc`: the peak bytes allocated during the
   call (result included). Allocations that bypass Python's and numpy's allocators are
   invisible to it: when the result's memory belongs to another library (a torch tensor)
   or the traced peak is smaller than the result itself, the row says ``None`` (n/a)
   rather than a wrong number.
4. That call's result against a float64 reference computed once per case in the parent
   process: the largest absolute error, and that error relative to the error bound of
   :mod:`convkit.testing` (above 1 means a wrong result, and the row is an error).

Each backend runs in its own worker process (``python -m convkit.bench``, job as JSON on
stdin, one JSON event per line on stdout), so one backend's thread pools cannot slow the
next: numba's OpenMP threads were measured making a following OpenBLAS matmul 16x slower.
The ``repeats`` are shared out over ``passes`` rounds of workers in which the backends take
turns (A B C, A B C, ...); later passes measure only the rows that are still ok. A row
reports the median of its fastest pass and the minimum of all its measurements
(:func:`_set_statistics`): a slow spell of the machine, or one slow process, only adds time,
so it spoils the other passes rather than the figure. A row whose passes' medians differ by
more than :data:`UNSTEADY_SPREAD` is reported as unsteady (``pass_spread``): the run saw the
machine change speed.
A worker that crashes or a backend that fails to load gives error rows, never a failed run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from convkit.backend import ConvBackend
from convkit.cases import BenchCase
from convkit.errors import UnsupportedConfigurationError
from convkit.machine import (
    BUSY_CORES,
    background_load,
    convkit_source,
    cpu_seconds,
    machine_info,
    matmul_peak,
    usable_cores,
)
from convkit.registry import get_backend
from convkit.testing import (
    OPERATIONS,
    ConvArrays,
    ConvCase,
    Operation,
    error_bound,
    run_operation,
)

SCHEMA = "convkit-bench/1"
#: The backend that computes the float64 reference (checked against naive and PyTorch by
#: the conformance tests, and fast enough for every suite).
REFERENCE_BACKEND = "im2col-strided"
#: Backends too slow for big cases: each case gets a time budget for one call.
BUDGETED_BACKENDS = frozenset({"naive"})
DEFAULT_BASELINE = "naive"
STATUSES = ("ok", "skipped", "error")
#: A row whose passes' medians differ by more than this fraction is reported as unsteady.
UNSTEADY_SPREAD = 0.15


@dataclass(frozen=True)
class BenchSettings:
    """How to measure. Times are in seconds."""

    ops: tuple[Operation, ...] = OPERATIONS
    dtype: str = "float32"
    threads: int = dataclasses.field(default_factory=usable_cores)
    """BLAS, OpenMP, numba and torch threads in each worker."""
    min_time: float = 0.05
    """Shortest duration of one measurement (calls are repeated within it)."""
    repeats: int = 7
    """Measurements per row; the row reports the median of its fastest pass and the
    minimum of all."""
    passes: int = 3
    """Worker processes per backend, run in turn with the other backends' (A B C A B C ...),
    each taking its share of the ``repeats``: a slow spell of the machine, or a slow process,
    then spoils some passes of every backend rather than all of one backend's, and a row
    reports the median of its fastest pass."""
    naive_budget: float = 1.0
    """Longest a budgeted (naive) backend may take for one call before the case is skipped."""

    def __post_init__(self) -> None:
        for op in self.ops:
            if op not in OPERATIONS:
                raise ValueError(f"ops: {op!r} is not one of {', '.join(OPERATIONS)}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name in ("threads", "repeats", "passes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("min_time", "naive_budget"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive seconds, got {getattr(self, name)}")


@dataclass
class Row:
    """The measurement of one case x operation x backend (times in seconds)."""

    case: str
    op: str
    backend: str
    status: str = "ok"
    reason: str | None = None
    median_s: float | None = None
    """The median of the measurements of the fastest pass (the pass with the lowest median)."""
    min_s: float | None = None
    cpu_median_s: float | None = None
    """Median CPU time per call of the worker process, all its threads together: on a busy
    machine it tells time spent computing from time spent waiting for a core."""
    first_call_s: float | None = None
    calls: int | None = None
    """Timed calls in all measurements together."""
    repeats: int | None = None
    pass_medians: list[float] | None = None
    """The median of each pass's measurements, in the order the passes ran."""
    pass_spread: float | None = None
    """How far apart the passes' medians lie: the largest over the smallest, minus 1 (0.2 is
    20%). Above :data:`UNSTEADY_SPREAD`, the machine's speed changed during the run (or one
    worker process ran slow). None: one pass."""
    max_abs_error: float | None = None
    error_vs_bound: float | None = None
    memory_bytes: int | None = None
    # Filled in by the parent from all rows of the run:
    gflops: float | None = None
    peak_percent: float | None = None
    baseline: str | None = None
    speedup: float | None = None


class _OverBudget(Exception):
    pass


# ---------------------------------------------------------------------------- the worker side


def _conv_case(case: BenchCase) -> ConvCase:
    return ConvCase(case.name, case.input_shape, case.weight_shape, **case.params)


class Measurement:
    """One row in the making: :meth:`start` (the warm-up call), :meth:`time_once` per round,
    then :meth:`finish` (medians, memory, error). A failure at any step ends the row with
    status skipped or error and the reason; later steps then do nothing."""

    def __init__(
        self, backend: ConvBackend, case: BenchCase, op: Operation, settings: BenchSettings
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
        conv_case = _conv_case(case)
        arrays = conv_case.arrays(self.settings.dtype)

        def call() -> np.ndarray:
            return run_operation(op, arrays, conv_case, backend.name)

        def warm_up() -> None:
            self.row.first_call_s = _first_call(call, self.budget)
            self._call = call

        self._attempt(warm_up)

    def time_once(self) -> None:
        """One measurement: calls back to back until ``min_time`` has passed."""
        if self.running:
            call = self._call
            self._attempt(lambda: self._add(*_measure(call, self.settings.min_time)))

    def _add(self, seconds_per_call: float, cpu_seconds_per_call: float, calls: int) -> None:
        self.times.append(seconds_per_call)
        self.cpu_times.append(cpu_seconds_per_call)
        self._calls += calls

    def finish(self, reference: Path | None) -> Row:
        """Medians, then memory and error from one more call; ``reference`` is an ``.npz``
        from :func:`write_references` (None: no error column)."""
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
            outcome.append(result)

        self._attempt(traced)
        if outcome and reference is not None:
            with np.load(reference) as ref:
                err = np.abs(outcome[0].astype(np.float64) - ref["reference"])
                row.max_abs_error = float(err.max())
                row.error_vs_bound = float((err / ref["bound"]).max())
            if not row.error_vs_bound <= 1:  # also NaN
                self.end(
                    "error",
                    f"wrong result: max error {row.max_abs_error:.3g} is "
                    f"{row.error_vs_bound:.3g}x the {self.settings.dtype} error bound",
                )
        return row

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
    case: BenchCase,
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


def _measure(call: Callable[[], object], min_time: float) -> tuple[float, float, int]:
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


@contextlib.contextmanager
def limit_threads(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` threads in BLAS/OpenMP, numba and torch (those loaded)."""
    restore: list[Callable[[], None]] = []
    numba = sys.modules.get("numba")
    if numba is not None:
        previous = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        restore.append(lambda: numba.set_num_threads(previous))
    torch = sys.modules.get("torch")
    if torch is not None:
        previous_torch = torch.get_num_threads()
        torch.set_num_threads(threads)
        restore.append(lambda: torch.set_num_threads(previous_torch))
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        for undo in restore:
            undo()


def thread_pools() -> dict[str, int]:
    """Threads each thread pool loaded in this process uses: BLAS and OpenMP libraries (by
    library file prefix), numba and torch."""
    pools = {info["prefix"]: info["num_threads"] for info in threadpool_info()}
    for name in ("numba", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            pools[name] = module.get_num_threads()
    return pools


def run_job(job: dict, emit: Callable[[dict], None]) -> None:
    """Measure every case x op of ``job`` on one backend, emitting events as they happen.

    ``job``: ``{"backend": name, "cases": [BenchCase fields], "settings": BenchSettings
    fields, "reference_dir": path or None, "only": [[case index, op], ...] or None (all)}``.
    Events: ``{"event": "loaded", "load_s", "thread_pools"}`` or ``{"event": "load-failed",
    "reason"}``, then ``{"event": "status", "text"}`` as work moves on and finally
    ``{"event": "row", "case_index", "row": Row fields, "times", "cpu_times"}`` per row,
    with the raw measurements the parent merges across passes.
    """
    settings = BenchSettings(**{**job["settings"], "ops": tuple(job["settings"]["ops"])})
    cases = [case_from_dict(c) for c in job["cases"]]
    start = time.perf_counter()
    try:
        backend = get_backend(job["backend"])
    except Exception as exc:  # a broken plugin is reported, whatever it raised
        emit({"event": "load-failed", "reason": str(exc)})
        return
    load_s = time.perf_counter() - start
    ref_dir = Path(job["reference_dir"]) if job.get("reference_dir") else None
    with limit_threads(settings.threads):
        emit({"event": "loaded", "load_s": load_s, "thread_pools": thread_pools()})
        only = {tuple(key) for key in job["only"]} if job.get("only") is not None else None
        rows = _measure_interleaved(backend, cases, settings, emit, only)
        for index, m in rows:
            ref = ref_dir / _reference_name(index, m.row.op) if ref_dir else None
            row = m.finish(ref)
            emit({"event": "row", "case_index": index, "row": dataclasses.asdict(row),
                  "times": m.times, "cpu_times": m.cpu_times})


def _measure_interleaved(
    backend: ConvBackend,
    cases: Sequence[BenchCase],
    settings: BenchSettings,
    emit: Callable[[dict], None],
    only: set[tuple[int, str]] | None = None,
) -> list[tuple[int, Measurement]]:
    """Warm up every row (every ``(case index, op)`` in ``only``, if given), then take the
    measurements in rounds, one per row per round, so that a burst of load from elsewhere on
    the machine touches one measurement of many rows rather than all the measurements of
    one row."""
    rows = []
    for index, case in enumerate(cases):
        emit({"event": "status", "text": f"{backend.name}: warming up {case.name}"})
        skip_reason = None
        for op in settings.ops:
            if only is not None and (index, op) not in only:
                continue
            m = Measurement(backend, case, op, settings)
            if skip_reason is not None:  # the budget is per case
                m.end("skipped", skip_reason)
            else:
                m.start()
                if m.over_budget:
                    skip_reason = m.row.reason
            rows.append((index, m))
    for round_ in range(settings.repeats):
        emit({"event": "status",
              "text": f"{backend.name}: measurement round {round_ + 1} of {settings.repeats}"})
        for _, m in rows:
            m.time_once()
    return rows


def case_to_dict(case: BenchCase) -> dict:
    """``case`` as JSON-ready fields (:func:`case_from_dict` reads them back)."""
    return dataclasses.asdict(case)


def case_from_dict(fields: dict) -> BenchCase:
    padding = fields["padding"]
    return BenchCase(**{
        **fields,
        "size": tuple(fields["size"]),
        "kernel": tuple(fields["kernel"]),
        "padding": tuple(padding) if isinstance(padding, list) else padding,
    })


def worker_main() -> None:
    """``python -m convkit.bench``: run the JSON job on stdin, events on stdout."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever a backend prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    job = json.load(sys.stdin)

    def emit(event: dict) -> None:
        protocol.write(json.dumps(event) + "\n")
        protocol.flush()

    run_job(job, emit)


# ---------------------------------------------------------------------------- the parent side


def _reference_name(index: int, op: str) -> str:
    return f"{index}-{op}.npz"


def write_references(
    cases: Sequence[BenchCase], settings: BenchSettings, directory: Path
) -> None:
    """Save, per case and op, the float64 reference result of the ``settings.dtype`` data
    and the elementwise error bound (:func:`convkit.testing.error_bound`)."""
    for index, case in enumerate(cases):
        conv_case = _conv_case(case)
        arrays = conv_case.arrays(settings.dtype)
        exact = ConvArrays(*(a.astype(np.float64) for a in dataclasses.astuple(arrays)))
        for op in settings.ops:
            reference = run_operation(op, exact, conv_case, REFERENCE_BACKEND)
            bound = error_bound(op, arrays, conv_case, REFERENCE_BACKEND)
            np.savez(directory / _reference_name(index, op), reference=reference, bound=bound)


def _worker_env(threads: int) -> dict[str, str]:
    """The worker's environment, with every thread pool sized to ``threads``.

    numpy's transparent huge pages stay on, as users have them: turning them off
    (``NUMPY_MADVISE_HUGEPAGE=0``) was measured making im2col on a 56x56, 64-channel layer
    1.4x slower and on a depthwise one 1.9x slower.
    """
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    return env


def _run_worker_process(job: dict, threads: int, emit: Callable[[dict], None]) -> None:
    """Run ``job`` in ``python -m convkit.bench``; raise RuntimeError if the worker dies."""
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "convkit.bench"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            env=_worker_env(threads), text=True, encoding="utf-8",
        ) as proc,
    ):
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        for line in proc.stdout:
            emit(json.loads(line))
        code = proc.wait()
        if code != 0:
            stderr.seek(0)
            lines = stderr.read().strip().splitlines() or ["(no output)"]
            raise RuntimeError(f"worker process exited with code {code}: {lines[-1]}")


def run_benchmark(
    cases: Sequence[BenchCase],
    backends: Sequence[str],
    settings: BenchSettings,
    *,
    baseline: str = DEFAULT_BASELINE,
    isolate: bool = True,
    named_explicitly: bool = True,
    suite: str | None = None,
    on_progress: Callable[[int, str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict:
    """Measure every case x op x backend and return the JSON-ready report.

    ``isolate``: one worker process per backend (False runs them in this process, for
    debugging). ``named_explicitly``: a backend that fails to load gives error rows if True,
    skipped rows if False (``--backend all`` shows unavailable backends without failing).
    ``on_progress(rows_done, text)`` is called as rows complete and as work moves on;
    ``on_warning(text)`` at once if other processes keep the machine busy at the start.
    Schema: :data:`SCHEMA` (``tests/test_bench.py`` checks every key).
    """
    progress = on_progress or (lambda done, text: None)
    started, cpu_before = time.time(), cpu_seconds()
    peak_start, peak_cpu = time.perf_counter(), cpu_seconds()
    peak = matmul_peak(settings.dtype, settings.threads)
    busy = background_load(peak_cpu, cpu_seconds(), time.perf_counter() - peak_start)
    if busy is not None and busy > BUSY_CORES and on_warning is not None:
        on_warning(
            f"other processes are keeping {busy:.1f} of {usable_cores()} cores busy: times "
            "will depend on them (fewer threads or a quiet machine give steadier figures)"
        )
    rows: dict[tuple[int, str, str], Row] = {}
    samples: dict[tuple[int, str, str], _Samples] = {}
    summaries: dict[str, dict] = {}
    all_keys = [(index, op) for index in range(len(cases)) for op in settings.ops]
    with tempfile.TemporaryDirectory(prefix="convkit-bench-") as tmp:
        write_references(cases, settings, Path(tmp))
        for pass_index, repeats in enumerate(_repeats_per_pass(settings)):
            pass_settings = dataclasses.replace(settings, repeats=repeats)
            for name in backends:
                keys = all_keys
                if pass_index:  # later passes measure only the rows that are still ok
                    keys = [k for k in all_keys if rows[(*k, name)].status == "ok"]
                    progress(len(all_keys) - len(keys), f"{name}: pass {pass_index + 1}")
                    if not keys:
                        continue
                job = {
                    "backend": name,
                    "cases": [case_to_dict(c) for c in cases],
                    "settings": dataclasses.asdict(pass_settings),
                    "reference_dir": tmp,
                    "only": keys if pass_index else None,
                }
                summary = _run_backend(job, cases, keys, pass_settings, isolate,
                                       named_explicitly, rows, samples, progress)
                if name not in summaries or summary["status"] == "error":
                    summaries[name] = summary
    for key, row_samples in samples.items():
        _set_statistics(rows[key], row_samples)
    ordered = []
    for index, case in enumerate(cases):
        for op in settings.ops:
            group = [rows[(index, op, name)] for name in backends]
            _add_derived(group, case.geometry(settings.dtype).flops, peak, baseline)
            ordered += group
    duration = time.time() - started
    for summary in summaries.values():
        summary["warmup_s"] = sum(
            r.first_call_s or 0.0 for r in ordered if r.backend == summary["name"]
        )
    return {
        "schema": SCHEMA,
        "convkit": convkit_source(),
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": duration,
        "background_load": background_load(cpu_before, cpu_seconds(), duration),
        "settings": {
            **dataclasses.asdict(settings),
            "ops": list(settings.ops),
            "suite": suite,
            "baseline": baseline,
            "isolation": "process" if isolate else "in-process",
            "reference_backend": REFERENCE_BACKEND,
        },
        "peak_gflops": {settings.dtype: peak},
        "cases": [_case_summary(c, settings.dtype) for c in cases],
        "backends": [summaries[name] for name in backends],
        "results": [dataclasses.asdict(r) for r in ordered],
    }


def _repeats_per_pass(settings: BenchSettings) -> list[int]:
    """``settings.repeats`` shared out over the passes, e.g. 7 over 3 -> [3, 2, 2]."""
    passes = min(settings.passes, settings.repeats)
    share, extra = divmod(settings.repeats, passes)
    return [share + (i < extra) for i in range(passes)]


def _run_backend(
    job: dict,
    cases: Sequence[BenchCase],
    keys: Sequence[tuple[int, str]],
    settings: BenchSettings,
    isolate: bool,
    named_explicitly: bool,
    rows: dict[tuple[int, str, str], Row],
    samples: dict[tuple[int, str, str], _Samples],
    progress: Callable[[int, str], None],
) -> dict:
    """Run one pass of one backend's job over ``keys`` (case index, op) and file its rows,
    merging them with earlier passes' (:func:`_merge_pass`); returns the backend's summary."""
    name = job["backend"]
    summary: dict = {"name": name, "status": "ok", "reason": None, "load_s": None,
                     "thread_pools": None}
    filed: set[tuple[int, str]] = set()

    def file_row(index: int, row: Row, times: list[float], cpu_times: list[float]) -> None:
        key = (index, row.op, name)
        earlier = rows.get(key)
        if earlier is None or row.status != "ok":  # the first result, or a failure, stands
            rows[key], samples[key] = row, _Samples()
        else:
            _merge_pass(earlier, row)
        samples[key].add_pass(times, cpu_times)
        filed.add((index, row.op))
        progress(1, f"{name} {row.case} {row.op}")

    def emit(event: dict) -> None:
        if event["event"] == "loaded":
            summary["load_s"], summary["thread_pools"] = event["load_s"], event["thread_pools"]
        elif event["event"] == "load-failed":
            summary["status"], summary["reason"] = "unavailable", event["reason"]
        elif event["event"] == "status":
            progress(0, event["text"])
        else:
            file_row(event["case_index"], Row(**event["row"]), event["times"],
                     event["cpu_times"])

    try:
        if isolate:
            _run_worker_process(job, settings.threads, emit)
        else:
            run_job(job, emit)
    except Exception as exc:  # a dead worker is reported in its rows
        summary["status"], summary["reason"] = "error", str(exc)
    if summary["status"] == "unavailable":
        status = "error" if named_explicitly else "skipped"
        reason = f"backend unavailable: {summary['reason']}"
    else:
        status, reason = "error", summary["reason"]
    for index, op in keys:
        if (index, op) not in filed:
            file_row(index, Row(cases[index].name, op, name, status, reason), [], [])
    return summary


def _merge_pass(row: Row, later: Row) -> None:
    """Fold a later pass's ok row into ``row``: calls add up; memory and error take the
    worse of the two. Times are merged from the raw samples (:func:`_set_statistics`)."""
    row.calls = (row.calls or 0) + (later.calls or 0)
    for field in ("memory_bytes", "max_abs_error", "error_vs_bound"):
        values = [v for v in (getattr(row, field), getattr(later, field)) if v is not None]
        setattr(row, field, max(values) if values else None)


@dataclass
class _Samples:
    """A row's raw measurements (seconds per call), one list per pass."""

    times: list[list[float]] = dataclasses.field(default_factory=list)
    cpu_times: list[list[float]] = dataclasses.field(default_factory=list)

    def add_pass(self, times: list[float], cpu_times: list[float]) -> None:
        if times:
            self.times.append(times)
            self.cpu_times.append(cpu_times)


def _set_statistics(row: Row, samples: _Samples) -> None:
    """The median of the fastest pass (lowest median), the minimum over every measurement,
    and every pass's median with their spread.

    A slow spell of the machine or a busy neighbour only ever adds time, and a pass (one
    worker process, seconds long) mostly lies within a spell or outside it: the least
    disturbed pass is the figure another run repeats (docs/benchmarking.md has the
    measurements).
    """
    if row.status != "ok" or not samples.times:
        return
    medians = [statistics.median(times) for times in samples.times]
    fastest = medians.index(min(medians))
    row.median_s, row.pass_medians = medians[fastest], medians
    row.cpu_median_s = statistics.median(samples.cpu_times[fastest])
    row.min_s = min(min(times) for times in samples.times)
    row.repeats = sum(len(times) for times in samples.times)
    if len(medians) > 1:
        row.pass_spread = max(medians) / min(medians) - 1


def _add_derived(group: list[Row], flops: int, peak: float, baseline: str) -> None:
    """GFLOP/s, % of the matmul peak and speed relative to the baseline, for the rows of
    one case and op (every backend)."""
    timed = [r for r in group if r.median_s is not None]
    for r in timed:
        r.gflops = flops / r.median_s / 1e9
        r.peak_percent = 100 * r.gflops / peak
    ok = [r for r in timed if r.status == "ok"]
    base = next((r for r in ok if r.backend == baseline), None)
    if base is None and ok:
        base = max(ok, key=lambda r: r.median_s)
    if base is not None:
        for r in timed:
            r.baseline, r.speedup = base.backend, base.median_s / r.median_s


def _case_summary(case: BenchCase, dtype: str) -> dict:
    geom = case.geometry(dtype)
    return {
        "name": case.name,
        "spec": case.spec(),
        "input_shape": list(geom.input_shape),
        "weight_shape": list(geom.weight_shape),
        "output_shape": list(geom.output_shape),
        "stride": list(geom.stride),
        "padding": list(geom.padding),
        "dilation": list(geom.dilation),
        "groups": geom.groups,
        "flops": geom.flops,
    }


if __name__ == "__main__":
    worker_main()
