"""Benchmark reports as text: a table for people, JSON and CSV for programs.

Every function takes the dictionary :func:`convkit.bench.runner.run_benchmark` returns.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence

from convkit.bench.results import UNSTEADY_P, UNSTEADY_SPREAD, Row
from convkit.bench.stats import is_unsteady
from convkit.machine import BUSY_CORES, PEAK_MATRIX_SIZE
from convkit.text import format_bytes, format_seconds, format_table

#: Row fields, in CSV column order.
FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Row))

_COLUMNS = ("case", "op", "backend", "median", "min", "spread", "GFLOP/s", "%peak", "speedup",
            "max error", "memory", "status")
#: Unsteady rows named below the table, the least steady first.
_UNSTEADY_LISTED = 5
_RIGHT_ALIGNED = {"median", "min", "spread", "GFLOP/s", "%peak", "speedup", "max error",
                  "memory"}


def to_json(report: dict) -> str:
    """The whole report (machine, versions, settings, cases, rows) as indented JSON."""
    return json.dumps(report, indent=2) + "\n"


def to_csv(report: dict) -> str:
    """One line per row, columns :data:`FIELDS`; an empty cell for a missing value, lists
    (``pass_medians``, ``median_ci_s``) separated by spaces, and the ``samples`` of each pass
    separated by spaces with `` | `` between passes."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in report["results"]:
        samples = row.get("samples")
        writer.writerow({
            **row,
            "pass_medians": _spaced(row["pass_medians"]),
            "median_ci_s": _spaced(row.get("median_ci_s")),
            "samples": samples and " | ".join(_spaced(times) for times in samples),
        })
    return out.getvalue()


def _spaced(values: list[float] | None) -> str | None:
    return values and " ".join(map(repr, values))


def to_rows_table(report: dict) -> str:
    """A header on the run and the machine, one line per row, and notes on the columns."""
    lines, rows = preamble(report)
    lines += format_table(_COLUMNS, [_cells(r) for r in rows], right=_RIGHT_ALIGNED)
    lines.append("")
    lines += notes(report, rows)
    return "\n".join(lines) + "\n"


def preamble(report: dict) -> tuple[list[str], list[dict]]:
    """The lines above a table (the run, the machine, warnings, backends that did not run,
    then a blank line) and the rows worth showing (not those of uninstalled backends)."""
    unavailable = [b for b in report["backends"] if b["status"] == "unavailable"]
    failed = [b for b in report["backends"] if b["status"] == "error"]
    hidden = {b["name"] for b in unavailable}
    rows = [r for r in report["results"] if r["backend"] not in hidden]
    lines = _header(report)
    busy = report["background_load"]
    if busy is not None and busy > BUSY_CORES:
        lines.append(
            f"WARNING: other processes kept {busy:.1f} of the {report['machine']['cores']} "
            "cores busy during the run: times depend on them and will differ between runs"
        )
    unsteady = [r for r in rows if is_unsteady(r)]
    if unsteady:
        lines.append(
            f"WARNING: {len(unsteady)} row{'s' if len(unsteady) > 1 else ''} changed speed by "
            f"more than {UNSTEADY_SPREAD:.0%} between passes, beyond their noise (the least "
            "steady are named below): the machine's speed changed during the run; each "
            "row's median is its fastest pass's"
        )
    lines += [f"not run: {b['name']} ({b['reason']})" for b in unavailable]
    lines += [f"worker failed: {b['name']} ({b['reason']})" for b in failed]
    lines.append("")
    return lines, rows


def _header(report: dict) -> list[str]:
    source, machine, settings = report["convkit"], report["machine"], report["settings"]
    commit = ""
    if source["commit"]:
        dirty = ", uncommitted changes" if source["dirty"] else ""
        commit = f" (git {source['commit'][:10]}{dirty})"
    suite = f"suite {settings['suite']}, " if settings["suite"] else ""
    passes = min(settings["passes"], settings["repeats"])
    isolation = (f"{passes} worker process{'es' if passes > 1 else ''} per backend, in turns"
                 if settings["isolation"] == "process" else "all backends in one process")
    libraries = ", ".join(
        f"{name} {machine[name]}" for name in ("numpy", "numba", "torch") if machine[name]
    )
    blas = "; ".join(
        f"{b['library']} {b['version']} ({b['threading']}, {b['architecture']})"
        for b in machine["blas"]
    ) or "unknown"
    dtype = settings["dtype"]
    threads = f"{settings['threads']} thread{'s' if settings['threads'] > 1 else ''}"
    measurements = f"{settings['repeats']} measurements of >= {settings['min_time'] * 1e3:g} ms"
    median = (f"median of the fastest of {passes} passes ({measurements} in all)"
              if passes > 1 else f"median of {measurements}")
    return [
        f"convkit {source['version']}{commit}: {suite}{dtype}, {threads}, {median}, "
        f"{isolation}",
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}, "
        f"Python {machine['python']}, {libraries}, BLAS {blas}",
        f"matmul peak ({dtype}, {PEAK_MATRIX_SIZE}x{PEAK_MATRIX_SIZE}, {threads}): "
        f"{report['peak_gflops'][dtype]:.1f} GFLOP/s",
    ]


def _cells(row: dict) -> list[str]:
    status = row["status"] if row["reason"] is None else f"{row['status']}: {row['reason']}"
    return [
        row["case"], row["op"], row["backend"],
        format_seconds(row["median_s"]), format_seconds(row["min_s"]), _spread(row),
        _number(row["gflops"], "{:.2f}"), _number(row["peak_percent"], "{:.1f}"),
        _number(row["speedup"], "{:.2f}x"), _number(row["max_abs_error"], "{:.1e}"),
        format_bytes(row["memory_bytes"]) if row["median_s"] is not None else "-",
        status,
    ]


def _spread(row: dict) -> str:
    """The slowest measurement over the fastest, minus 1, as a percentage."""
    times = [t for one_pass in row.get("samples") or [] for t in one_pass]
    return f"{max(times) / min(times) - 1:.0%}" if times else "-"


def notes(report: dict, rows: Sequence[dict], *, columns: bool = True) -> list[str]:
    """The lines below a table: what the columns mean (``columns``), the unsteady rows, the
    first calls and the run's duration."""
    settings = report["settings"]
    baseline = settings["baseline"]
    fallbacks = sorted({f"{r['case']} {r['op']}" for r in rows
                        if r["baseline"] is not None and r["baseline"] != baseline})
    lines = [f"each median: {settings.get('placement', 'one placement of the inputs')}"]
    if columns:
        lines += [
            "spread: the slowest measurement over the fastest (placements, passes and noise "
            "together)",
            f"speedup: the baseline's median / this median; baseline {baseline}"
            + (f", else the slowest backend ({', '.join(fallbacks)})" if fallbacks else ""),
            f"%peak: GFLOP/s as a percentage of the matmul peak; max error: against a float64 "
            f"result of {settings['reference_backend']}",
            "memory: peak bytes allocated during one call, result included "
            "(n/a: allocations tracemalloc cannot see, e.g. torch's)",
        ]
    unsteady = sorted((r for r in rows if is_unsteady(r)), key=lambda r: -r["pass_spread"])
    if unsteady:
        listed = unsteady[:_UNSTEADY_LISTED]
        more = len(unsteady) - len(listed)
        lines.append(
            f"unsteady (passes differ, Kruskal-Wallis p < {UNSTEADY_P:g}; largest pass median "
            "over the smallest): "
            + ", ".join(f"{r['case']} {r['op']} {r['backend']} +{r['pass_spread']:.0%}"
                        for r in listed)
            + (f", and {more} more (pass_spread, pass_p_value in JSON and CSV)" if more else "")
        )
    warmups = ", ".join(
        f"{b['name']} {b['warmup_s']:.2f} s" for b in report["backends"] if b["status"] == "ok"
    )
    if warmups:
        lines.append(f"first calls, not in any timing (numba compiles here): {warmups}")
    prepared = ", ".join(f"{b['name']} {b['prepare_s']:.2f} s" for b in report["backends"]
                         if b["status"] == "ok" and b.get("prepare_s"))
    if prepared:
        lines.append(f"preparation before the first calls, not in any timing (auto measures "
                     f"its candidates here): {prepared}")
    lines.append(f"total time {report['duration_s']:.1f} s")
    return lines


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
