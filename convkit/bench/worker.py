"""The worker process of ``convkit bench``: one backend, every row of a job.

``python -m convkit.bench.worker`` reads a job as JSON on stdin and writes one JSON event
per line on stdout (:func:`run_job` documents both); whatever a backend prints goes to
stderr. Each backend runs in a process of its own so that one backend's thread pools cannot
slow the next: numba's OpenMP threads were measured making a following OpenBLAS matmul 16x
slower.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from convkit.backend import ConvBackend
from convkit.bench.measure import Measurement
from convkit.bench.results import BenchSettings
from convkit.machine import thread_pools
from convkit.parallelism import threads
from convkit.registry import get_backend
from convkit.workload import ConvCase


def run_job(job: dict, emit: Callable[[dict], None]) -> None:
    """Measure every case x op of ``job`` on one backend, emitting events as they happen.

    ``job``: ``{"backend": name, "cases": [ConvCase fields], "settings": BenchSettings
    fields, "reference_dir": path or None, "only": [[case index, op], ...] or None (all)}``.
    Events: ``{"event": "loaded", "load_s", "thread_pools"}`` or ``{"event": "load-failed",
    "reason"}``, then ``{"event": "status", "text"}`` as work moves on, ``{"event":
    "notice", "text"}`` for what a person should see at once (a first call that is still
    compiling after :data:`SLOW_FIRST_CALL_S`), and finally ``{"event": "row", "case_index",
    "row": Row fields, "times", "cpu_times"}`` per row, with the raw measurements the parent
    merges across passes. ``emit`` may be called from a timer thread.
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
    with threads(settings.threads):
        emit({"event": "loaded", "load_s": load_s, "thread_pools": thread_pools()})
        only = {tuple(key) for key in job["only"]} if job.get("only") is not None else None
        rows = _measure_interleaved(backend, cases, settings, emit, only)
        for index, m in rows:
            ref = ref_dir / reference_name(index, m.row.op) if ref_dir else None
            row = m.finish(ref)
            emit({"event": "row", "case_index": index, "row": dataclasses.asdict(row),
                  "times": m.times, "cpu_times": m.cpu_times})


def _measure_interleaved(
    backend: ConvBackend,
    cases: Sequence[ConvCase],
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
                with _notice_if_slow(emit, f"{backend.name}: the first call of {case.name} is "
                                           f"still running after {SLOW_FIRST_CALL_S:g} s (a "
                                           "large layer, or compilation: numba compiles "
                                           "its kernels once per install, tens of seconds)"):
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

#: Seconds after which a first call that is still running is announced as compiling.
SLOW_FIRST_CALL_S = 3.0


@contextlib.contextmanager
def _notice_if_slow(emit: Callable[[dict], None], text: str) -> Iterator[None]:
    """Emit a notice with ``text`` if the block is still running after
    :data:`SLOW_FIRST_CALL_S` seconds."""
    timer = threading.Timer(SLOW_FIRST_CALL_S, lambda: emit({"event": "notice", "text": text}))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def case_to_dict(case: ConvCase) -> dict:
    """``case`` as JSON-ready fields (:func:`case_from_dict` reads them back)."""
    return dataclasses.asdict(case)


def case_from_dict(fields: dict) -> ConvCase:
    """The case :func:`case_to_dict` wrote (JSON turns its tuples into lists)."""
    return ConvCase(**{
        key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()
    })


def reference_name(index: int, op: str) -> str:
    """The file name of case ``index``'s reference result for ``op`` in the reference
    directory (:func:`convkit.bench.runner.write_references` writes it)."""
    return f"{index}-{op}.npz"


def worker_main() -> None:
    """``python -m convkit.bench.worker``: run the JSON job on stdin, events on stdout."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever a backend prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    job = json.load(sys.stdin)

    lock = threading.Lock()  # a notice comes from a timer thread

    def emit(event: dict) -> None:
        with lock:
            protocol.write(json.dumps(event) + "\n")
            protocol.flush()

    run_job(job, emit)


if __name__ == "__main__":
    worker_main()
