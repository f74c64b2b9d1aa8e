"""A row's figures from its raw measurements: merging passes, the median of the fastest
pass, the spread between passes, and the figures derived across backends (GFLOP/s, % of
the matmul peak, speedup over the baseline).

The ``repeats`` of a run are shared out over ``passes`` rounds of worker processes in which
the backends take turns (A B C, A B C, ...). A row reports the median of its fastest pass
and the minimum of all its measurements (:func:`set_statistics`): a slow spell of the
machine, or one slow process, only adds time, so it spoils the other passes rather than the
figure. A row is reported as unsteady when its passes' medians differ by more than
:data:`~convkit.bench.results.UNSTEADY_SPREAD` and a Kruskal-Wallis test says the passes'
measurements differ beyond their noise (:func:`is_unsteady`). Every figure is derived from
the raw measurements, which the row keeps (``samples``).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass

from convkit.bench.results import UNSTEADY_P, UNSTEADY_SPREAD, BenchSettings, Row

#: The least coverage of :func:`median_interval`.
CONFIDENCE = 0.95


def repeats_per_pass(settings: BenchSettings) -> list[int]:
    """``settings.repeats`` shared out over the passes, e.g. 7 over 3 -> [3, 2, 2]."""
    passes = min(settings.passes, settings.repeats)
    share, extra = divmod(settings.repeats, passes)
    return [share + (i < extra) for i in range(passes)]


def merge_pass(row: Row, later: Row) -> None:
    """Fold a later pass's ok row into ``row``: calls add up; memory and error take the
    worse of the two. Times are merged from the raw samples (:func:`set_statistics`)."""
    row.calls = (row.calls or 0) + (later.calls or 0)
    for field in ("memory_bytes", "max_abs_error", "error_vs_bound"):
        values = [v for v in (getattr(row, field), getattr(later, field)) if v is not None]
        setattr(row, field, max(values) if values else None)


@dataclass
class Samples:
    """A row's raw measurements (seconds per call), one list per pass."""

    times: list[list[float]] = dataclasses.field(default_factory=list)
    cpu_times: list[list[float]] = dataclasses.field(default_factory=list)

    def add_pass(self, times: list[float], cpu_times: list[float]) -> None:
        if times:
            self.times.append(times)
            self.cpu_times.append(cpu_times)


def set_statistics(row: Row, samples: Samples) -> None:
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
    row.pass_p_value = passes_p_value(samples.times)
    row.median_ci_s = median_interval([t for times in samples.times for t in times])
    row.samples = samples.times


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> list[float] | None:
    """``[low, high]``: order statistics that enclose the median of the distribution
    ``values`` come from with probability at least ``confidence``, whatever its shape;
    None when there are too few values for that (fewer than 6 for 95%).

    The ``k``-th smallest value lies below the median unless at most ``k - 1`` values do,
    which has the binomial probability ``P(B(n, 1/2) <= k - 1)``.
    """
    n = len(values)
    tail = (1 - confidence) / 2
    k, below = 0, 0.0  # below: P(B(n, 1/2) <= k)
    while True:
        below += math.comb(n, k) / 2**n
        if below > tail:
            break
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return [ordered[k - 1], ordered[n - k]]


def passes_p_value(passes: list[list[float]]) -> float | None:
    """The Kruskal-Wallis p-value that the passes' measurements come from one distribution;
    None without at least two passes of two measurements."""
    groups = [times for times in passes if len(times) >= 2]
    if len(groups) < 2:
        return None
    if len({t for times in groups for t in times}) == 1:
        return 1.0
    from scipy.stats import kruskal  # imported here: the worker never needs it

    return float(kruskal(*groups).pvalue)


def is_unsteady(row: dict) -> bool:
    """Whether a report row's passes differ beyond their noise: a spread above
    :data:`UNSTEADY_SPREAD` with a Kruskal-Wallis p-value below :data:`UNSTEADY_P`."""
    spread, p = row.get("pass_spread"), row.get("pass_p_value")
    return spread is not None and p is not None and spread > UNSTEADY_SPREAD and p < UNSTEADY_P


def add_derived(group: list[Row], flops: int, peak: float, baseline: str) -> None:
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
