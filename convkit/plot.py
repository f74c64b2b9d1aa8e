"""Pictures of a ``convkit bench`` report: a roofline and per-layer speedups.

* **Roofline** (Williams, Waterman & Patterson 2009): each ok row's achieved GFLOP/s
  against its arithmetic intensity (FLOPs per byte of its operands and result, each moved
  once), under the compute roof (the report's measured matmul peak) and the bandwidth roof
  (the report's measured copy bandwidth times the intensity). A point far below both roofs
  leaves speed on the table; a point on the slanted roof is limited by memory.
* **Speedups**: per layer and operation, how many times faster the fastest convkit backend
  is than the default backend and than torch (where it ran).

matplotlib is an optional dependency (``pip install 'convkit[plot]'``); it is imported only
here, when a plot is made.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from convkit.bench.summary import YARDSTICKS

FORMATS = ("png", "svg", "html")
INSTALL_HINT = "pip install 'convkit[plot]'"


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def intensity(case: dict, dtype: str) -> float:
    """FLOPs per byte of one call of ``case`` (a report's case entry): the input, weight and
    output each moved once. The three operations read two of them and write the third, so
    one intensity serves all three."""
    elements = sum(int(np.prod(case[key]))
                   for key in ("input_shape", "weight_shape", "output_shape"))
    return case["flops"] / (elements * np.dtype(dtype).itemsize)


def save_plot(report: dict, output: Path) -> None:
    """Draw the roofline and the speedup bars of ``report`` into ``output`` (its suffix
    picks the format: .png, .svg, or .html with the picture inside it)."""
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"output must end in one of {', '.join('.' + f for f in FORMATS)}, "
                         f"got {output.name!r}")
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no window
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailableError(f"plots need matplotlib: {INSTALL_HINT}") from exc
    figure, (roofline, bars) = plt.subplots(
        1, 2, figsize=(15, 6.5), gridspec_kw={"width_ratios": [1, 1.3]})
    _draw_roofline(roofline, report)
    _draw_speedups(bars, report)
    figure.suptitle(_title(report))
    figure.tight_layout()
    if fmt == "html":
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        image = base64.b64encode(buffer.getvalue()).decode("ascii")
        output.write_text(
            f"<!doctype html><meta charset='utf-8'><title>convkit bench</title>"
            f"<h1>{_title(report)}</h1><img alt='roofline and speedups' "
            f"src='data:image/png;base64,{image}'>\n", encoding="utf-8")
    else:
        figure.savefig(output, dpi=110)
    plt.close(figure)


def _title(report: dict) -> str:
    settings, machine = report["settings"], report["machine"]
    suite = settings.get("suite") or "custom cases"
    return (f"convkit bench: {suite}, {settings['dtype']}, {settings['threads']} threads, "
            f"{machine['cpu']}")


def _draw_roofline(axes, report: dict) -> None:
    dtype = report["settings"]["dtype"]
    cases = {case["name"]: case for case in report["cases"]}
    peak = report["peak_gflops"][dtype]
    bandwidth = report.get("bandwidth_gbs")
    backends = list(dict.fromkeys(r["backend"] for r in report["results"]))
    markers = "os^Dv<>p*hX"
    points = []
    for i, backend in enumerate(backends):
        rows = [r for r in report["results"]
                if r["backend"] == backend and r["status"] == "ok" and r["gflops"]]
        if not rows:
            continue
        x = [intensity(cases[r["case"]], dtype) for r in rows]
        y = [r["gflops"] for r in rows]
        points += x
        axes.scatter(x, y, marker=markers[i % len(markers)], label=backend, alpha=0.75)
    if points:
        xs = np.geomspace(min(points) / 2, max(points) * 2, 200)
        axes.plot(xs, np.full_like(xs, peak), "k-", lw=1,
                  label=f"matmul peak {peak:.0f} GFLOP/s")
        if bandwidth:
            axes.plot(xs, np.minimum(peak, bandwidth * xs), "k--", lw=1,
                      label=f"copy bandwidth {bandwidth:.1f} GB/s")
    axes.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP/byte)",
             ylabel="achieved GFLOP/s", title="roofline: every ok row")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")


def _draw_speedups(axes, report: dict) -> None:
    summary = [s for s in report["summary"] if s["fastest"] is not None]
    labels = [f"{s['case']} {s['op']}" for s in summary]
    positions = np.arange(len(summary))
    default = report["settings"].get("default_backend", "default")
    series = [(key, label) for key, label in
              (("vs_default", f"fastest vs {default}"),
               ("vs_torch", f"fastest vs {', '.join(sorted(YARDSTICKS))}"))
              if any(s[key] is not None for s in summary)]
    if not series:
        axes.axis("off")
        axes.text(0.5, 0.5, f"nothing to compare with: the report has neither {default} (the "
                  f"default backend)\nnor torch; bench them too (--backend all)",
                  ha="center", va="center", transform=axes.transAxes)
        return
    height = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        values = [s[key] or 0.0 for s in summary]
        axes.barh(positions + i * height, values, height=height, label=label)
    for position, s in zip(positions, summary, strict=True):
        axes.text(0.02, position, s["fastest"], va="center", fontsize="x-small",
                  transform=axes.get_yaxis_transform())
    axes.axvline(1.0, color="k", lw=1)
    axes.set_yticks(positions + height * (len(series) - 1) / 2, labels, fontsize="x-small")
    axes.invert_yaxis()
    axes.set(xscale="log", xlabel="times faster (above 1: the fastest convkit backend wins)",
             title="per layer: the fastest convkit backend (named in each bar)")
    axes.legend(fontsize="small")
