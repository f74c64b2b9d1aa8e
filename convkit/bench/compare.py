"""Two ``convkit bench`` reports side by side: did a change make things faster or slower?

Rows are matched by case, operation and backend; only rows that are ok in both reports are
compared. The difference of two medians is ``|new - old| / min(old, new)``: symmetric, so
1.0 -> 1.15 and 1.15 -> 1.0 both count as 15%. Rows whose medians are both below
``min_seconds`` are listed but left out of the summary: on a shared machine their timings
move most, and they decide little.
"""

from __future__ import annotations

from dataclasses import dataclass

from convkit.text import format_seconds, format_table

#: Default: medians further apart than this are a change (the bench issue's own criterion).
DEFAULT_THRESHOLD = 0.15
#: Default: rows whose medians are both below this many seconds are not judged.
DEFAULT_MIN_SECONDS = 1e-3
#: Settings that must agree for two reports to be comparable.
_SETTINGS_COMPARED = ("dtype", "threads", "min_time", "repeats", "passes")


@dataclass(frozen=True)
class RowChange:
    """One row present and ok in both reports (times in seconds)."""

    case: str
    op: str
    backend: str
    old_s: float
    new_s: float

    @property
    def ratio(self) -> float:
        """New median over old: below 1 is faster."""
        return self.new_s / self.old_s

    @property
    def difference(self) -> float:
        """``|new - old| / min(old, new)``."""
        return abs(self.new_s - self.old_s) / min(self.old_s, self.new_s)


@dataclass(frozen=True)
class Comparison:
    """The rows ok in both reports, in the old report's order, and how to judge them."""

    rows: list[RowChange]
    threshold: float
    min_seconds: float
    warnings: list[str]

    def judges(self, row: RowChange) -> bool:
        """Whether ``row`` counts: at least one of its medians reaches ``min_seconds``."""
        return max(row.old_s, row.new_s) >= self.min_seconds

    @property
    def judged(self) -> list[RowChange]:
        return [r for r in self.rows if self.judges(r)]

    @property
    def changed(self) -> list[RowChange]:
        """The judged rows whose difference exceeds ``threshold``."""
        return [r for r in self.judged if r.difference > self.threshold]

    def summary(self) -> str:
        if not self.judged:
            return f"no row of {format_seconds(self.min_seconds)} or more is in both reports"
        worst = max(r.difference for r in self.judged)
        return (
            f"rows of {format_seconds(self.min_seconds)} or more: {len(self.judged)}, "
            f"within {self.threshold:.0%}: {len(self.judged) - len(self.changed)}, "
            f"largest difference {worst:.1%}"
        )


def compare_reports(
    old: dict,
    new: dict,
    threshold: float = DEFAULT_THRESHOLD,
    min_seconds: float = DEFAULT_MIN_SECONDS,
) -> Comparison:
    """Match the ok rows of two reports (:func:`convkit.bench.run_benchmark` dictionaries)."""
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    if not min_seconds >= 0:
        raise ValueError(f"min_seconds must be at least 0, got {min_seconds}")
    new_rows = {_key(r): r for r in new["results"] if r["status"] == "ok"}
    rows = [
        RowChange(*_key(r), r["median_s"], new_rows[_key(r)]["median_s"])
        for r in old["results"]
        if r["status"] == "ok" and _key(r) in new_rows
    ]
    return Comparison(rows, threshold, min_seconds, _warnings(old, new))


def to_text(comparison: Comparison) -> str:
    """A line per row (old, new, new/old, difference; ``*`` marks a change), then the
    summary."""
    lines = [f"warning: {w}" for w in comparison.warnings]
    header = ("case", "op", "backend", "old", "new", "new/old", "difference")
    cells = [
        (r.case, r.op, r.backend, format_seconds(r.old_s), format_seconds(r.new_s),
         f"{r.ratio:.2f}", _difference_cell(r, comparison))
        for r in comparison.rows
    ]
    lines += format_table(header, cells, right=header[3:])
    lines += ["", comparison.summary()]
    return "\n".join(lines) + "\n"


def _difference_cell(row: RowChange, comparison: Comparison) -> str:
    if not comparison.judges(row):
        return f"{row.difference:.1%}  (under {format_seconds(comparison.min_seconds)})"
    return f"{row.difference:.1%}" + (" *" if row.difference > comparison.threshold else "  ")


def _key(row: dict) -> tuple[str, str, str]:
    return row["case"], row["op"], row["backend"]


def _warnings(old: dict, new: dict) -> list[str]:
    """What makes the two reports' times incomparable, or not wholly comparable."""
    warnings = [
        f"settings differ: {name} {old['settings'][name]} vs {new['settings'][name]}"
        for name in _SETTINGS_COMPARED
        if old["settings"][name] != new["settings"][name]
    ]
    if old["machine"]["cpu"] != new["machine"]["cpu"]:
        warnings.append(
            f"machines differ: {old['machine']['cpu']!r} vs {new['machine']['cpu']!r}"
        )
    return warnings
