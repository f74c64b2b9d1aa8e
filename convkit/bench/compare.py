"""Two ``convkit bench`` reports side by side: did a change make things faster or slower?

Rows are matched by case, operation and backend. Every matched row gets a verdict from its
raw measurements (``samples``), as asv's ``continuous`` and Google Benchmark's
``compare.py`` judge theirs:

* ``'slower'`` / ``'faster'``: a two-sided Mann-Whitney U test on the two rows' samples
  gives ``p < alpha`` **and** the medians differ by at least ``threshold`` (new/old above
  ``1 + threshold``, or below ``1 / (1 + threshold)``);
* ``'no change'``: otherwise;
* ``'not judged'``: too few samples for the test ever to reach ``p < alpha`` (the smallest
  two-sided p of ``n1`` and ``n2`` samples is ``2 / C(n1 + n2, n1)``), with the reason: a
  failed row has none, and reports of schema ``convkit-bench/1`` kept none.

The U test needs no assumption about the shape of the timing distribution (timings are
skewed and often bimodal); the effect-size floor keeps a real but tiny difference, which
many samples make significant, from being called a change.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass

from convkit.text import format_seconds, format_table

#: Default: medians must differ by at least this fraction to be a change.
DEFAULT_THRESHOLD = 0.10
#: Default: the U test's p-value must be below this to be a change (Google Benchmark's
#: ``compare.py`` default). The threshold keeps false alarms down: two back-to-back quick
#: runs flagged no row at 0.05 or at 0.01, but at 0.01 whether a 25% slowdown of numba was
#: found on most rows depended on the machine's spells during the run (13 or 18 of 18).
DEFAULT_ALPHA = 0.05
VERDICTS = ("slower", "faster", "no change", "not judged")
#: Settings that must agree for two reports to be comparable.
_SETTINGS_COMPARED = ("dtype", "threads", "min_time", "repeats", "passes")


@dataclass(frozen=True)
class RowVerdict:
    """One row matched in both reports (times in seconds; ``None`` where a report has no
    figure)."""

    case: str
    op: str
    backend: str
    old_s: float | None
    new_s: float | None
    ratio: float | None
    """New median over old: below 1 is faster."""
    p_value: float | None
    verdict: str
    reason: str | None = None
    """Why the row is not judged."""


@dataclass(frozen=True)
class Comparison:
    """Every row of the old report that the new one also has, in the old report's order."""

    rows: list[RowVerdict]
    threshold: float
    alpha: float
    warnings: list[str]

    @property
    def changed(self) -> list[RowVerdict]:
        """The rows judged slower or faster."""
        return [r for r in self.rows if r.verdict in ("slower", "faster")]

    def counts(self) -> Counter[str]:
        return Counter(r.verdict for r in self.rows)

    def summary(self) -> str:
        """Each verdict's count, e.g. ``'slower: 1, faster: 0, no change: 20, not judged: 2'``."""
        counts = self.counts()
        return ", ".join(f"{verdict}: {counts[verdict]}" for verdict in VERDICTS)


def compare_reports(
    old: dict, new: dict, threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA
) -> Comparison:
    """Judge every row of ``old`` that ``new`` also has (reports as
    :func:`convkit.bench.runner.run_benchmark` returns them)."""
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie between 0 and 1, got {alpha}")
    new_rows = {_key(r): r for r in new["results"]}
    rows = [_judge(r, new_rows[_key(r)], threshold, alpha)
            for r in old["results"] if _key(r) in new_rows]
    return Comparison(rows, threshold, alpha, _warnings(old, new))


def _judge(old: dict, new: dict, threshold: float, alpha: float) -> RowVerdict:
    old_s, new_s = old.get("median_s"), new.get("median_s")
    ratio = new_s / old_s if old_s and new_s else None
    key = _key(old)
    reason = _unjudgeable(old, "OLD") or _unjudgeable(new, "NEW")
    if reason is None:
        x, y = _flat(old["samples"]), _flat(new["samples"])
        if smallest_p_value(len(x), len(y)) >= alpha:
            reason = (f"{len(x)} and {len(y)} samples cannot reach p < {alpha:g} "
                      "(take more --repeats)")
    if reason is not None or ratio is None:
        return RowVerdict(*key, old_s, new_s, ratio, None, "not judged", reason)
    p = _mann_whitney_p(x, y)
    verdict = "no change"
    if p < alpha and ratio >= 1 + threshold:
        verdict = "slower"
    elif p < alpha and ratio <= 1 / (1 + threshold):
        verdict = "faster"
    return RowVerdict(*key, old_s, new_s, ratio, p, verdict)


def _unjudgeable(row: dict, which: str) -> str | None:
    if row["status"] != "ok":
        return f"{row['status']} in {which}"
    if not row.get("samples"):
        return f"no raw samples in {which} (a report of schema convkit-bench/1)"
    return None


def _flat(samples: list[list[float]]) -> list[float]:
    return [t for one_pass in samples for t in one_pass]


def smallest_p_value(n1: int, n2: int) -> float:
    """The smallest two-sided p-value a U test of ``n1`` and ``n2`` samples can give:
    complete separation, ``2 / C(n1 + n2, n1)`` (1 if either is empty)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    return min(1.0, 2 / math.comb(n1 + n2, n1))


def _mann_whitney_p(x: list[float], y: list[float]) -> float:
    from scipy.stats import mannwhitneyu  # imported here: `import convkit` stays light

    if len(set(x) | set(y)) == 1:  # all equal: no evidence of any difference
        return 1.0
    return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


def to_text(comparison: Comparison) -> str:
    """A line per row (old, new, new/old, p, verdict), then the count of each verdict."""
    lines = [f"warning: {w}" for w in comparison.warnings]
    header = ("case", "op", "backend", "old", "new", "new/old", "p", "verdict")
    lines += format_table(header, [_cells(r) for r in comparison.rows], right=header[3:7])
    lines += ["", _criterion(comparison), comparison.summary()]
    return "\n".join(lines) + "\n"


def to_markdown(comparison: Comparison) -> str:
    """The same as a Markdown table, for a pull request."""
    header = ("case", "op", "backend", "old", "new", "new/old", "p", "verdict")
    lines = [f"> warning: {w}" for w in comparison.warnings]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * 4 + "---|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in comparison.rows]
    lines += ["", _criterion(comparison), "", f"**{comparison.summary()}**"]
    return "\n".join(lines) + "\n"


def to_json(comparison: Comparison) -> str:
    """``{"rows": [{"case", "op", "backend", "old_s", "new_s", "ratio", "p_value", "verdict",
    "reason"}, ...], "threshold", "alpha", "counts", "warnings"}``."""
    return json.dumps({
        "rows": [asdict(r) for r in comparison.rows],
        "threshold": comparison.threshold,
        "alpha": comparison.alpha,
        "counts": {verdict: comparison.counts()[verdict] for verdict in VERDICTS},
        "warnings": comparison.warnings,
    }, indent=2) + "\n"


def _cells(row: RowVerdict) -> tuple[str, ...]:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
    p = "-" if row.p_value is None else f"{row.p_value:.2g}"
    verdict = row.verdict if row.reason is None else f"{row.verdict}: {row.reason}"
    return (row.case, row.op, row.backend, format_seconds(row.old_s),
            format_seconds(row.new_s), ratio, p, verdict)


def _criterion(comparison: Comparison) -> str:
    return (f"a change: Mann-Whitney U p < {comparison.alpha:g} on the raw samples and "
            f"medians {comparison.threshold:.0%} or more apart")


def _key(row: dict) -> tuple[str, str, str]:
    return row["case"], row["op"], row["backend"]


def _warnings(old: dict, new: dict) -> list[str]:
    """What makes the two reports' times incomparable, or not wholly comparable."""
    warnings = [
        f"settings differ: {name} {old['settings'].get(name)} vs {new['settings'].get(name)}"
        for name in _SETTINGS_COMPARED
        if old["settings"].get(name) != new["settings"].get(name)
    ]
    if old["machine"]["cpu"] != new["machine"]["cpu"]:
        warnings.append(
            f"machines differ: {old['machine']['cpu']!r} vs {new['machine']['cpu']!r}"
        )
    return warnings
