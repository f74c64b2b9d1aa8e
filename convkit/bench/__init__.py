"""The benchmarking harness behind ``convkit bench`` and ``convkit compare``.

A *row* is one case x operation x backend. The modules, in the order a run uses them:

* :mod:`~convkit.bench.results`: the settings, the row, the report schema, reading a report;
* :mod:`~convkit.bench.runner`: the parent process: passes of worker processes, one per
  backend in turns, the float64 references, the report;
* :mod:`~convkit.bench.worker`: one backend's worker process (``python -m
  convkit.bench.worker``, a JSON job in, JSON events out);
* :mod:`~convkit.bench.measure`: measuring one row (warm-up, timed calls, memory, error);
* :mod:`~convkit.bench.stats`: a row's figures from its raw measurements;
* :mod:`~convkit.bench.table`, :mod:`~convkit.bench.compare`: reports as text, JSON and
  CSV, and two reports side by side.

The harness speaks the vocabulary of :mod:`convkit.workload` (cases, operations, error
bounds) and never imports the conformance kit (:mod:`convkit.testing`).
"""

from convkit.bench.measure import measure_row
from convkit.bench.results import (
    DEFAULT_BASELINE,
    SCHEMA,
    UNSTEADY_SPREAD,
    BenchSettings,
    ReportError,
    Row,
    read_report,
)
from convkit.bench.runner import run_benchmark
from convkit.bench.worker import run_job

__all__ = [
    "DEFAULT_BASELINE",
    "SCHEMA",
    "UNSTEADY_SPREAD",
    "BenchSettings",
    "ReportError",
    "Row",
    "measure_row",
    "read_report",
    "run_benchmark",
    "run_job",
]
