"""What a benchmark run is asked for and what it produces: the settings, one result row,
the report's schema, and reading a saved report back.

Times are in seconds throughout; a report is the JSON-ready dict
:func:`convkit.bench.runner.run_benchmark` returns (``tests/test_bench.py`` checks every key).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from convkit.machine import usable_cores
from convkit.workload import DTYPES, OPERATIONS, Operation

SCHEMA = "convkit-bench/2"
#: Schemas :func:`read_report` accepts: /1 reports have no raw ``samples`` (compare lists
#: their rows as not judged).
READABLE_SCHEMAS = ("convkit-bench/1", SCHEMA)
#: The backend that computes the float64 reference (checked against naive and PyTorch by
#: the conformance tests, and fast enough for every suite).
REFERENCE_BACKEND = "im2col-strided"
#: Backends too slow for big cases: each case gets a time budget for one call.
BUDGETED_BACKENDS = frozenset({"naive"})
DEFAULT_BASELINE = "naive"
STATUSES = ("ok", "skipped", "error")
#: A row whose passes' medians differ by more than this fraction, and significantly
#: (:data:`UNSTEADY_P`), is reported as unsteady.
UNSTEADY_SPREAD = 0.15
#: The Kruskal-Wallis p-value across a row's passes below which they differ beyond noise.
UNSTEADY_P = 0.01
#: How the inputs of each measurement are placed in memory (the report's settings say it).
PLACEMENT = ("each measurement on a fresh copy of the inputs at a random offset "
             "(0-4032 bytes in 64-byte steps)")


@dataclass(frozen=True)
class BenchSettings:
    """How to measure. Times are in seconds."""

    ops: tuple[Operation, ...] = OPERATIONS
    dtype: str = "float32"
    threads: int = dataclasses.field(default_factory=usable_cores)
    """BLAS, OpenMP, numba and torch threads in each worker."""
    min_time: float = 0.03
    """Shortest duration of one measurement (calls are repeated within it)."""
    repeats: int = 15
    """Measurements per row; the row reports the median of its fastest pass and the
    minimum of all. Many short measurements rather than a few long ones: each lands on
    another memory placement, and ``convkit compare``'s test gains power with their number
    (in two quick runs each, 15 of 0.03 s found a 10% slowdown on 12-17 of a backend's 18
    rows, 9 of 0.05 s on 3-10)."""
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
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
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
    prepare_s: float | None = None
    """Seconds the backend's ``prepare`` took before the first call (``auto`` measures its
    candidates there); never part of a timing."""
    first_call_s: float | None = None
    calls: int | None = None
    """Timed calls in all measurements together."""
    repeats: int | None = None
    pass_medians: list[float] | None = None
    """The median of each pass's measurements, in the order the passes ran."""
    pass_spread: float | None = None
    """How far apart the passes' medians lie: the largest over the smallest, minus 1 (0.2 is
    20%). None: one pass."""
    pass_p_value: float | None = None
    """Kruskal-Wallis p-value of the passes' measurements: below :data:`UNSTEADY_P` (and a
    spread above :data:`UNSTEADY_SPREAD`) the passes differ beyond their noise, and the row
    is unsteady: the machine's speed changed during the run (or one worker ran slow).
    None: fewer than two passes of two measurements."""
    median_ci_s: list[float] | None = None
    """A distribution-free confidence interval ``[low, high]`` of at least 95% for the median
    of all measurements (order statistics); None below 6 measurements."""
    samples: list[list[float]] | None = None
    """Every measurement (seconds per call), one list per pass in the order the passes ran:
    the raw data every figure above is derived from."""
    max_abs_error: float | None = None
    error_vs_bound: float | None = None
    memory_bytes: int | None = None
    # Filled in by the parent from all rows of the run:
    gflops: float | None = None
    peak_percent: float | None = None
    baseline: str | None = None
    speedup: float | None = None


class ReportError(ValueError):
    """A file that is not a report of ``convkit bench --format json``."""


def read_report(path: Path) -> dict:
    """The report saved at ``path``; :class:`ReportError` if it is not JSON or not a report
    of a schema in :data:`READABLE_SCHEMAS`."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{str(path)!r} is not JSON ({exc})") from None
    if not isinstance(report, dict) or report.get("schema") not in READABLE_SCHEMAS:
        raise ReportError(
            f"{str(path)!r} is not a report of `convkit bench --format json` "
            f"(schema {' or '.join(READABLE_SCHEMAS)})"
        )
    return report
