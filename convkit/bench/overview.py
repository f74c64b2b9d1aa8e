"""The overview ``convkit bench`` prints by default: layers as rows, backends as columns,
the fastest backend named per row, and a network's totals.

It answers the questions people bring: which backend should I use for my layers, how much
faster is it than the default and than PyTorch, how long does my network spend in
convolutions. The full per-row table (``--format rows``) and the JSON keep every figure.
"""

from __future__ import annotations

from convkit.bench.summary import FASTEST, YARDSTICKS
from convkit.bench.table import notes, preamble
from convkit.text import format_seconds, format_table


def to_overview(report: dict) -> str:
    """The run's header, one line per layer and operation with every backend's median and
    the fastest convkit backend, the network totals (for a network suite), and notes."""
    lines, rows = preamble(report)
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    cells = {(r["case"], r["op"], r["backend"]): _cell(r) for r in rows}
    summary = [s for s in report["summary"] if (s["case"], s["op"]) in
               {(r["case"], r["op"]) for r in rows}]
    header = ("case", "op", *backends, "fastest", "vs default", "vs torch")
    table = [
        (s["case"], s["op"], *(cells[s["case"], s["op"], b] for b in backends),
         s["fastest"] or "-", _times(s["vs_default"]), _times(s["vs_torch"]))
        for s in summary
    ]
    lines += format_table(header, table, right=(*backends, "vs default", "vs torch"))
    if report.get("totals"):
        lines += ["", *_totals(report, backends)]
    lines.append("")
    default = report["settings"].get("default_backend", "the default backend")
    lines += [
        f"each cell: the median time of one call; fastest: the quickest convkit backend "
        f"({', '.join(sorted(YARDSTICKS))} is a yardstick, never named); vs default: "
        f"{default}'s median over the fastest's; vs torch: torch's over the fastest's",
    ]
    problems = [r for r in rows if r["status"] != "ok"]
    if problems:
        lines.append(f"skip/error: {len(problems)} rows; the reasons are in --format rows")
    lines += notes(report, rows, columns=False)
    return "\n".join(lines) + "\n"


def _cell(row: dict) -> str:
    if row["status"] == "ok":
        return format_seconds(row["median_s"])
    return "skip" if row["status"] == "skipped" else "error"


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _totals(report: dict, backends: list[str]) -> list[str]:
    """The network's convolution time per backend: a forward pass and a training step."""
    totals = report["totals"]
    layers = sum(case["count"] for case in report["cases"])
    names = [*backends, FASTEST]
    header = (f"network ({layers} convolutions)", *names)
    table = [
        (label, *(format_seconds(totals[key][name]) for name in names))
        for label, key in (("forward pass", "forward_s"), ("training step", "training_step_s"))
    ]
    return [*format_table(header, table, right=names),
            "network totals: each layer's median times the number of times it occurs; "
            "training step: forward and both gradients; '-': a layer that backend did not run"]
