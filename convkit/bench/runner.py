"""The parent side of ``convkit bench``: run the workers pass by pass, gather their rows,
and build the report.

For each pass, each backend's job runs in a worker process of its own
(:mod:`convkit.bench.worker`); the backends take turns (A B C, A B C, ...) and later passes
measure only the rows that are still ok. The parent computes each case's float64 reference
once (:func:`write_references`), merges the passes' raw measurements into each row's
figures (:mod:`convkit.bench.stats`), and returns the JSON-ready report. A worker that
crashes or a backend that fails to load gives error rows, never a failed run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from convkit.bench.results import (
    BUDGETED_BACKENDS,
    DEFAULT_BASELINE,
    PLACEMENT,
    REFERENCE_BACKEND,
    SCHEMA,
    BenchSettings,
    Row,
)
from convkit.bench.stats import (
    Samples,
    add_derived,
    merge_pass,
    repeats_per_pass,
    set_statistics,
)
from convkit.bench.summary import fastest_per_row, network_totals
from convkit.bench.worker import case_to_dict, reference_name, run_job
from convkit.cases import case_spec
from convkit.machine import (
    BUSY_CORES,
    background_load,
    convkit_source,
    copy_bandwidth,
    cpu_seconds,
    machine_info,
    matmul_peak,
    usable_cores,
)
from convkit.registry import DEFAULT_BACKEND
from convkit.workload import ConvCase, magnitude, run_operation, terms_per_output

RowKey = tuple[int, str, str]
"""(case index, operation, backend)."""


def run_benchmark(
    cases: Sequence[ConvCase],
    backends: Sequence[str],
    settings: BenchSettings,
    *,
    baseline: str = DEFAULT_BASELINE,
    isolate: bool = True,
    named_explicitly: bool = True,
    suite: str | None = None,
    counts: Sequence[int] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict:
    """Measure every case x op x backend and return the JSON-ready report.

    ``isolate``: one worker process per backend (False runs them in this process, for
    debugging). ``named_explicitly``: a backend that fails to load gives error rows if True,
    skipped rows if False (``--backend all`` shows unavailable backends without failing).
    ``on_progress(seconds, text)`` is called as rows complete (with each row's share of
    :func:`expected_seconds`) and as work moves on (with 0); ``on_notice(text)`` with what
    a person should see at once (a first call still compiling);
    ``on_warning(text)`` at once if other processes keep the machine busy at the start.
    ``counts``: how often each case occurs in a network (:mod:`convkit.networks`); with them
    the report's ``totals`` give the network's convolution time per backend.
    Schema: :data:`SCHEMA` (``tests/test_bench.py`` checks every key).
    """
    progress = on_progress or (lambda done, text: None)
    notice = on_notice or (lambda text: None)
    started, cpu_before = time.time(), cpu_seconds()
    peak_start, peak_cpu = time.perf_counter(), cpu_seconds()
    peak = matmul_peak(settings.dtype, settings.threads)
    bandwidth = copy_bandwidth()
    busy = background_load(peak_cpu, cpu_seconds(), time.perf_counter() - peak_start)
    if busy is not None and busy > BUSY_CORES and on_warning is not None:
        on_warning(
            f"other processes are keeping {busy:.1f} of {usable_cores()} cores busy: times "
            "will depend on them (fewer threads or a quiet machine give steadier figures)"
        )
    run = _Passes(cases, isolate, named_explicitly, progress, notice)
    summaries: dict[str, dict] = {}
    all_keys = [(index, op) for index in range(len(cases)) for op in settings.ops]
    with tempfile.TemporaryDirectory(prefix="convkit-bench-") as tmp:
        write_references(cases, settings, Path(tmp))
        for pass_index, repeats in enumerate(repeats_per_pass(settings)):
            pass_settings = dataclasses.replace(settings, repeats=repeats)
            run.weights = {(index, op, name): _row_seconds(cases[index], op, name, pass_settings)
                           for index, op in all_keys for name in backends}
            for name in backends:
                keys = all_keys
                if pass_index:  # later passes measure only the rows that are still ok
                    keys = [k for k in all_keys if run.rows[(*k, name)].status == "ok"]
                    progress(sum(run.weights[(*k, name)] for k in all_keys if k not in keys),
                             f"{name}: pass {pass_index + 1}")
                    if not keys:
                        continue
                job = {
                    "backend": name,
                    "cases": [case_to_dict(c) for c in cases],
                    "settings": dataclasses.asdict(pass_settings),
                    "reference_dir": tmp,
                    "only": keys if pass_index else None,
                }
                summary = run.run_backend(job, keys, pass_settings.threads)
                if name not in summaries or summary["status"] == "error":
                    summaries[name] = summary
    for key, row_samples in run.samples.items():
        set_statistics(run.rows[key], row_samples)
    ordered = []
    for index, case in enumerate(cases):
        for op in settings.ops:
            group = [run.rows[(index, op, name)] for name in backends]
            add_derived(group, case.geometry(settings.dtype).flops, peak, baseline)
            ordered += group
    duration = time.time() - started
    for summary in summaries.values():
        own = [r for r in ordered if r.backend == summary["name"]]
        summary["warmup_s"] = sum(r.first_call_s or 0.0 for r in own)
        summary["prepare_s"] = sum(r.prepare_s or 0.0 for r in own)
    results = [dataclasses.asdict(r) for r in ordered]
    weights = list(counts) if counts is not None else [1] * len(cases)
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
            "placement": PLACEMENT,
            "default_backend": DEFAULT_BACKEND,
        },
        "peak_gflops": {settings.dtype: peak},
        "bandwidth_gbs": bandwidth,
        "cases": [{**_case_summary(c, settings.dtype), "count": n}
                  for c, n in zip(cases, weights, strict=True)],
        "backends": [summaries[name] for name in backends],
        "results": results,
        "summary": fastest_per_row(results, DEFAULT_BACKEND),
        "totals": None if counts is None else network_totals(
            results, {c.name: n for c, n in zip(cases, weights, strict=True)}, backends),
    }

class _Passes:
    """The rows of a run as its passes file them, with each row's raw measurements."""

    def __init__(
        self,
        cases: Sequence[ConvCase],
        isolate: bool,
        named_explicitly: bool,
        progress: Callable[[float, str], None],
        notice: Callable[[str], None],
    ) -> None:
        self.cases, self.isolate, self.named_explicitly = cases, isolate, named_explicitly
        self.progress, self.notice = progress, notice
        self.weights: dict[RowKey, float] = {}
        """Each row's expected seconds in the current pass (its share of the progress)."""
        self.rows: dict[RowKey, Row] = {}
        self.samples: dict[RowKey, Samples] = {}

    def file_row(self, index: int, row: Row, times: list[float], cpu_times: list[float]) -> None:
        """Add one pass's ``row``: the first result, or a failure, stands; a later ok pass
        is merged into it (:func:`~convkit.bench.stats.merge_pass`)."""
        key = (index, row.op, row.backend)
        earlier = self.rows.get(key)
        if earlier is None or row.status != "ok":
            self.rows[key], self.samples[key] = row, Samples()
        else:
            merge_pass(earlier, row)
        self.samples[key].add_pass(times, cpu_times)
        self.progress(self.weights.get(key, 0.0), f"{row.backend} {row.case} {row.op}")

    def run_backend(self, job: dict, keys: Sequence[tuple[int, str]], threads: int) -> dict:
        """Run one pass of one backend's job over ``keys`` (case index, op), file its rows and
        return the backend's summary. Rows the worker never sent become error rows (or
        skipped ones, for a backend that is not installed and was not asked for by name)."""
        name = job["backend"]
        summary: dict = {"name": name, "status": "ok", "reason": None, "load_s": None,
                         "thread_pools": None}
        filed: set[tuple[int, str]] = set()

        def emit(event: dict) -> None:
            if event["event"] == "loaded":
                summary["load_s"] = event["load_s"]
                summary["thread_pools"] = event["thread_pools"]
            elif event["event"] == "load-failed":
                summary["status"], summary["reason"] = "unavailable", event["reason"]
            elif event["event"] == "status":
                self.progress(0, event["text"])
            elif event["event"] == "notice":
                self.notice(event["text"])
            else:
                row = Row(**event["row"])
                self.file_row(event["case_index"], row, event["times"], event["cpu_times"])
                filed.add((event["case_index"], row.op))

        try:
            if self.isolate:
                _run_worker_process(job, threads, emit)
            else:
                run_job(job, emit)
        except Exception as exc:  # a dead worker is reported in its rows
            summary["status"], summary["reason"] = "error", str(exc)
        if summary["status"] == "unavailable":
            status = "error" if self.named_explicitly else "skipped"
            reason = f"backend unavailable: {summary['reason']}"
        else:
            status, reason = "error", summary["reason"]
        for index, op in keys:
            if (index, op) not in filed:
                self.file_row(index, Row(self.cases[index].name, op, name, status, reason),
                              [], [])
        return summary


#: The rate :func:`expected_seconds` assumes per thread (GFLOP/s), and the naive backend's.
_NOMINAL_GFLOPS_PER_THREAD = 20.0
_NOMINAL_NAIVE_GFLOPS = 0.5


def _row_seconds(case: ConvCase, op: str, backend: str, settings: BenchSettings) -> float:
    """What one pass of one row is expected to take: the warm-up and traced calls and
    ``settings.repeats`` measurements of at least ``min_time``. Only the proportions
    matter (a progress bar's estimate), so the call time is a nominal rate's."""
    flops = case.geometry(settings.dtype).flops
    if backend in BUDGETED_BACKENDS:
        call = min(settings.naive_budget, flops / (_NOMINAL_NAIVE_GFLOPS * 1e9))
    else:
        call = flops / (_NOMINAL_GFLOPS_PER_THREAD * settings.threads * 1e9)
    return 2 * call + settings.repeats * max(settings.min_time, call)


def expected_seconds(
    cases: Sequence[ConvCase], backends: Sequence[str], settings: BenchSettings
) -> float:
    """The sum of every row's expected seconds over every pass: the length of a progress
    bar that :func:`run_benchmark`'s ``on_progress`` fills."""
    return sum(
        _row_seconds(case, op, name, dataclasses.replace(settings, repeats=repeats))
        for repeats in repeats_per_pass(settings)
        for case in cases for op in settings.ops for name in backends
    )


def write_references(
    cases: Sequence[ConvCase], settings: BenchSettings, directory: Path
) -> None:
    """Save, per case and op, the float64 reference result of the ``settings.dtype`` data
    and what each backend's error bound is made of: each element's sum of absolute terms and
    the number of terms (:func:`convkit.workload.declared_bound_of`)."""
    for index, case in enumerate(cases):
        arrays = case.arrays(settings.dtype)
        exact = arrays.astype(np.float64)
        for op in settings.ops:
            reference = run_operation(op, exact, case, REFERENCE_BACKEND)
            sums = magnitude(op, arrays, case, REFERENCE_BACKEND)
            terms = terms_per_output(op, case.geometry(settings.dtype))
            np.savez(directory / reference_name(index, op), reference=reference, sums=sums,
                     terms=terms)


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
    """Run ``job`` in ``python -m convkit.bench.worker``; raise RuntimeError if the worker
    dies.

    The worker leads a process group of its own, so a Ctrl-C at the terminal reaches only
    this process; whatever ends this function early (KeyboardInterrupt, the SystemExit of
    SIGTERM, an error) ends the whole group before it propagates: no worker outlives a run.
    """
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "convkit.bench.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            env=_worker_env(threads), text=True, encoding="utf-8", start_new_session=True,
        ) as proc,
    ):
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
            for line in proc.stdout:
                emit(json.loads(line))
            code = proc.wait()
        except BaseException:
            _end_process_group(proc)
            raise
        if code != 0:
            stderr.seek(0)
            lines = stderr.read().strip().splitlines() or ["(no output)"]
            raise RuntimeError(f"worker process exited with code {code}: {lines[-1]}")


def _end_process_group(proc: subprocess.Popen, grace_s: float = 2.0) -> None:
    """SIGTERM to ``proc``'s process group, SIGKILL after ``grace_s`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _case_summary(case: ConvCase, dtype: str) -> dict:
    geom = case.geometry(dtype)
    return {
        "name": case.name,
        "spec": case_spec(case),
        "input_shape": list(geom.input_shape),
        "weight_shape": list(geom.weight_shape),
        "output_shape": list(geom.output_shape),
        "stride": list(geom.stride),
        "padding": list(geom.padding),
        "dilation": list(geom.dilation),
        "groups": geom.groups,
        "flops": geom.flops,
    }
