"""``convkit bench``, ``convkit compare`` and ``convkit plot``: time backends side by side,
judge two reports, draw one (the harness is :mod:`convkit.bench`)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click

from convkit.bench import (
    DEFAULT_BASELINE,
    BenchSettings,
    ReportError,
    read_report,
    run_benchmark,
)
from convkit.bench import compare as comparison
from convkit.bench import table as formats
from convkit.bench.overview import to_overview
from convkit.bench.runner import expected_seconds
from convkit.cli.layers import backend_names, layer_options, operations, selected_layers
from convkit.machine import usable_cores

_FORMATTERS = {"table": to_overview, "rows": formats.to_rows_table, "json": formats.to_json,
               "csv": formats.to_csv}


@click.command()
@click.option(
    "--backend", "backend_spec", default="all", show_default=True, metavar="all|NAME[,NAME...]",
    help="Backends to time: 'all' installed ones, or comma-separated names "
         "(see `convkit backends`).",
)
@layer_options("time")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for BLAS, numba and torch.  [default: all usable cores]")
@click.option("--format", "fmt", type=click.Choice(list(_FORMATTERS)), default="table",
              show_default=True,
              help="table: layers as rows, backends as columns, the fastest named; rows: "
                   "every figure of every row; json: the whole report; csv: the rows.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results to FILE instead of stdout.")
@click.option(
    "--baseline", default=None, metavar="NAME",
    help=f"Backend the speedup column compares with.  [default: {DEFAULT_BASELINE} where it "
         "ran, else the slowest]",
)
@click.option("--min-time", type=click.FloatRange(min=0, min_open=True),
              default=BenchSettings.min_time,
              show_default=True, help="Seconds one measurement lasts at least.")
@click.option("--repeats", type=click.IntRange(min=1), default=BenchSettings.repeats,
              show_default=True,
              help="Measurements per row, shared out over the passes (compare's test needs "
                   "5 or more in each report).")
@click.option("--passes", type=click.IntRange(min=1), default=3, show_default=True,
              help="Worker processes per backend, taking turns with the other backends'; "
                   "a row reports the median of its fastest pass, which a slow spell of "
                   "the machine spares.")
@click.option("--naive-budget", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True,
              help="Seconds one naive call may take; slower cases are skipped for naive.")
@click.option("--in-process", is_flag=True,
              help="Run every backend in this process (debugging; thread pools interfere).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr.")
def bench(
    backend_spec: str,
    suite: str | None,
    batch: int | None,
    image_size: int | None,
    case_specs: tuple[str, ...],
    op_spec: str,
    dtype: str,
    threads: int | None,
    fmt: str,
    output: Path | None,
    baseline: str | None,
    min_time: float,
    repeats: int,
    passes: int,
    naive_budget: float,
    in_process: bool,
    progress: bool,
) -> None:
    """Time backends side by side: speed, correctness and memory.

    The default table has a line per layer and operation: every backend's median time, the
    fastest convkit backend, and how much faster it is than the default backend and than
    PyTorch (where torch is installed); a network suite adds the network's totals.
    `--format rows` shows every figure of every layer x operation x backend: median and
    minimum time, spread, GFLOP/s, percentage of this machine's matmul peak, speedup over
    the baseline, largest error against a float64 reference, extra memory, and status (ok,
    skipped or error, with the reason). The exit status is 1 if any result is an error
    (after all results are written).

    \b
    Examples:
      convkit bench                                  # quick suite, every backend
      convkit bench --backend im2col-strided,numba --suite standard
      convkit bench --suite resnet50 --batch 8 --image-size 224
      convkit bench --case n=8,c=64,o=128,hw=28,k=3,p=1 --op forward --format json
    """
    backends = backend_names(backend_spec)
    ops = operations(op_spec)
    suite, cases, counts = selected_layers(suite, case_specs, batch, image_size)
    if baseline is not None and baseline not in backends:
        raise click.BadParameter(
            f"{baseline!r} is not among the benchmarked backends ({', '.join(backends)})",
            param_hint="'--baseline'",
        )
    if output is not None and not output.parent.is_dir():
        raise click.BadParameter(f"directory {str(output.parent)!r} does not exist",
                                 param_hint="'--output'")
    settings = BenchSettings(
        ops=ops, dtype=dtype, threads=threads or usable_cores(), min_time=min_time,
        repeats=repeats, passes=passes, naive_budget=naive_budget,
    )
    # The bar counts expected milliseconds, so that its estimate of the time left holds
    # however unequal the layers are.
    total = max(1, round(1e3 * expected_seconds(cases, backends, settings)))
    try:
        with _sigterm_ends_run(), click.progressbar(
            length=total, label="benchmarking", file=sys.stderr, hidden=not progress,
            item_show_func=lambda text: text,
        ) as bar:
            result = run_benchmark(
                cases, backends, settings,
                baseline=baseline or DEFAULT_BASELINE,
                isolate=not in_process,
                named_explicitly=backend_spec.strip() != "all",
                suite=suite,
                counts=counts,
                on_progress=lambda seconds, text: bar.update(round(1e3 * seconds), text),
                on_notice=lambda text: click.echo(f"\n{text}", err=True),
                on_warning=lambda text: click.echo(f"\nwarning: {text}", err=True),
            )
    except KeyboardInterrupt:
        click.echo("\ninterrupted: every worker ended, no report written", err=True)
        sys.exit(130)
    text = _FORMATTERS[fmt](result)
    if output is None:
        click.echo(text, nl=False)
    else:
        _write_atomically(output, text)
        click.echo(f"wrote {len(result['results'])} results to {output}", err=True)
    errors = sum(row["status"] == "error" for row in result["results"])
    if errors:
        click.echo(f"{errors} of {len(result['results'])} results are errors", err=True)
        sys.exit(1)


@contextlib.contextmanager
def _sigterm_ends_run() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the block, so that a run ends the same way
    (its workers ended, nothing written) whether it is interrupted or terminated."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that ``path`` only ever holds a whole report: a
    temporary file beside it, renamed over it once complete."""
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent,
                                     prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


@click.command()
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The picture to write: FILE.png, FILE.svg, or FILE.html (self-contained).")
def plot(report: Path, output: Path) -> None:
    """Draw a `convkit bench --format json` REPORT: a roofline and per-layer speedups.

    The roofline puts every ok row's GFLOP/s against its arithmetic intensity, under this
    machine's measured matmul peak and copy bandwidth; the bars show how many times faster
    the fastest convkit backend is than the default backend and than torch, per layer.
    Needs matplotlib: pip install 'convkit[plot]'.
    """
    from convkit.plot import FORMATS, PlotUnavailableError, save_plot

    if output.suffix.lower().lstrip(".") not in FORMATS:
        raise click.BadParameter(f"must end in .png, .svg or .html, got {output.name!r}",
                                 param_hint="'--output'")
    data = _read_report(report, "REPORT")
    try:
        save_plot(data, output)
    except PlotUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {output}", err=True)


_COMPARE_FORMATTERS = {"text": comparison.to_text, "json": comparison.to_json,
                       "markdown": comparison.to_markdown}


@click.command()
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True),
              default=comparison.DEFAULT_THRESHOLD, show_default=True,
              help="Smallest difference of the medians that counts as a change (0.1 is 10%).")
@click.option("--alpha", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
              default=comparison.DEFAULT_ALPHA, show_default=True,
              help="A change also needs the Mann-Whitney U test's p-value below this.")
@click.option("--format", "fmt", type=click.Choice(list(_COMPARE_FORMATTERS)), default="text",
              show_default=True)
@click.option("--fail-on-change", is_flag=True,
              help="Exit with status 1 if any row is judged slower or faster.")
def compare(old: Path, new: Path, threshold: float, alpha: float, fmt: str,
            fail_on_change: bool) -> None:
    """Judge every row of two `convkit bench --format json` reports, OLD and NEW.

    Per row: old and new median, new/old (below 1 is faster), the p-value of a two-sided
    Mann-Whitney U test on the rows' raw samples, and the verdict: slower or faster (p below
    --alpha and medians at least --threshold apart), no change, or not judged (too few
    samples for the test, with the reason). The last line counts each verdict. A warning
    comes first when the reports were made with different settings or on different
    machines.

    \b
    Example:
      convkit bench --format json --output before.json
      convkit bench --format json --output after.json
      convkit compare before.json after.json
    """
    reports = [_read_report(path, name) for path, name in ((old, "OLD"), (new, "NEW"))]
    result = comparison.compare_reports(*reports, threshold=threshold, alpha=alpha)
    click.echo(_COMPARE_FORMATTERS[fmt](result), nl=False)
    if fail_on_change and result.changed:
        sys.exit(1)


def _read_report(path: Path, name: str) -> dict:
    try:
        return read_report(path)
    except ReportError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None
