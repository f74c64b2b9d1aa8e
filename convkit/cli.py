"""The ``convkit`` command: a click group; each subcommand is one function below.

``convkit bench`` times backends side by side (:mod:`convkit.bench`), ``convkit compare``
sets two of its JSON reports side by side (:mod:`convkit.bench.compare`), ``convkit backends``
lists what is installed, ``convkit check`` runs the conformance suite (:mod:`convkit.testing`)
against one backend, ``convkit tune`` measures and shows auto's decisions
(:mod:`convkit.autotune`). Results go to stdout (or ``--output``), progress to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import click

import convkit
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
from convkit.cases import SPEC_HELP, SUITES, parse_case
from convkit.errors import BackendUnavailableError, UnknownBackendError
from convkit.machine import usable_cores
from convkit.networks import DEFAULT_BATCH, DEFAULT_IMAGE_SIZE, NETWORKS, network_cases
from convkit.registry import (
    DEFAULT_BACKEND,
    backend_infos,
    backend_problem,
    get_backend,
    list_backends,
)
from convkit.testing import check_backend
from convkit.text import format_table
from convkit.workload import DTYPES, OPERATIONS, ConvCase

_FORMATTERS = {"table": to_overview, "rows": formats.to_rows_table, "json": formats.to_json,
               "csv": formats.to_csv}
_FORMAT_NAMES = list(_FORMATTERS)


@click.group()
@click.version_option(convkit.__version__, prog_name="convkit")
def main() -> None:
    """convkit: 2-D convolution on the CPU with pluggable backends."""


@main.command()
@click.option(
    "--backend", "backend_spec", default="all", show_default=True, metavar="all|NAME[,NAME...]",
    help="Backends to time: 'all' installed ones, or comma-separated names "
         "(see `convkit backends`).",
)
@click.option(
    "--suite", type=click.Choice([*SUITES, *NETWORKS]), default=None,
    help="Named suite of layers, or a network's convolutions (resnet50, mobilenetv2, vgg16, "
         "convnext-t: the report then gives the network's totals).  [default: quick; none "
         "when --case is given]",
)
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help=f"Images per batch for a network suite.  [default: {DEFAULT_BATCH}]")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help=f"Image side in pixels for a network suite.  [default: {DEFAULT_IMAGE_SIZE}]")
@click.option(
    "--case", "case_specs", multiple=True, metavar="SPEC",
    help=f"A custom layer to time (repeatable; with --suite, added to it). SPEC is "
         f"{SPEC_HELP}.",
)
@click.option(
    "--op", "op_spec", default=",".join(OPERATIONS), show_default=True, metavar="OP[,OP...]",
    help="Operations, comma-separated.",
)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for BLAS, numba and torch.  [default: all usable cores]")
@click.option("--format", "fmt", type=click.Choice(_FORMAT_NAMES), default="table",
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
@click.option("--min-time", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="Seconds one measurement lasts at least.")
@click.option("--repeats", type=click.IntRange(min=1), default=9, show_default=True,
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
    backends = _backend_names(backend_spec)
    ops = _operations(op_spec)
    if suite is None and not case_specs:
        suite = "quick"
    cases, counts = _cases(suite, case_specs, batch, image_size)
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


def _backend_names(spec: str) -> list[str]:
    known = list_backends()
    if spec.strip() == "all":
        return known
    return _comma_list(spec, known, "--backend", "backend")


def _operations(spec: str) -> tuple[str, ...]:
    return tuple(_comma_list(spec, OPERATIONS, "--op", "operation"))


def _comma_list(spec: str, allowed: Sequence[str], option: str, what: str) -> list[str]:
    """The names in comma-separated ``spec``; a usage error for an unknown or repeated one."""
    names = [name.strip() for name in spec.split(",")]
    for name in names:
        if name not in allowed:
            raise click.BadParameter(
                f"unknown {what} {name!r}; choose from {', '.join(allowed)}",
                param_hint=f"'{option}'",
            )
        if names.count(name) > 1:
            raise click.BadParameter(f"{what} {name!r} is given twice",
                                     param_hint=f"'{option}'")
    return names


def _cases(
    suite: str | None, specs: tuple[str, ...], batch: int | None, image_size: int | None
) -> tuple[list[ConvCase], list[int] | None]:
    """The cases to time and, for a network suite, how often each occurs in the network."""
    counts = None
    if suite in NETWORKS:
        try:
            layers = network_cases(suite, batch or DEFAULT_BATCH,
                                   image_size or DEFAULT_IMAGE_SIZE)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--image-size'") from None
        cases, counts = [case for case, _ in layers], [count for _, count in layers]
    else:
        for name, value in (("--batch", batch), ("--image-size", image_size)):
            if value is not None:
                raise click.BadParameter(f"applies to network suites only ({', '.join(NETWORKS)})",
                                         param_hint=f"'{name}'")
        cases = list(SUITES[suite]) if suite else []
    for spec in specs:
        try:
            cases.append(parse_case(spec))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--case'") from None
        if counts is not None:
            counts.append(1)
    names = [case.name for case in cases]
    for name in names:
        if names.count(name) > 1:
            raise click.BadParameter(f"two cases are named {name!r}; give one a name=...",
                                     param_hint="'--case'")
    return cases, counts


@main.command()
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


@main.command()
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


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def backends(fmt: str) -> None:
    """List the installed backends and what they support.

    Per backend: available or not (with the reason), the distribution that registered it,
    and its capabilities. Each backend is loaded to find out.
    """
    entries = []
    for info in backend_infos():
        entry = {"name": info.name, "available": True, "reason": None,
                 "distribution": info.distribution, "target": info.target,
                 "supports": None, "default": info.name == DEFAULT_BACKEND}
        problem = backend_problem(info.name)
        if problem is None:
            entry["supports"] = get_backend(info.name).capabilities.describe()
            if info.name == "auto":
                from convkit.autotune import decision_count

                entry["decisions"] = decision_count()
                entry["supports"] += f"; {entry['decisions']} decisions stored"
        else:
            entry["available"], entry["reason"] = False, problem
        entries.append(entry)
    if fmt == "json":
        click.echo(json.dumps(entries, indent=2))
        return
    rows = [
        (f"{e['name']} (default)" if e["default"] else e["name"],
         "available" if e["available"] else "unavailable",
         e["distribution"], e["supports"] or e["reason"])
        for e in entries
    ]
    for line in format_table(("backend", "status", "distribution", "supports / reason"), rows):
        click.echo(line)


@main.command()
@click.argument("name")
@click.option("--dtype", "dtypes", type=click.Choice(DTYPES), multiple=True,
              help="Check only this dtype (repeatable).  [default: every dtype NAME declares]")
@click.option("--max-failures", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many failing checks to describe in full.")
def check(name: str, dtypes: tuple[str, ...], max_failures: int) -> None:
    """Run the conformance suite against the installed backend NAME.

    Every case of the project's own test suite x forward, input-grad, weight-grad x each
    dtype, compared with the naive backend in float64 within a rounding-error bound, plus the
    adjoint identity and NaN/Inf propagation. Configurations NAME's capabilities exclude are
    skipped and counted. Exit status 1 if any check fails.
    """
    try:
        with click.progressbar(length=1, label=f"checking {name}", file=sys.stderr) as bar:

            def advance(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)

            report = check_backend(name, dtypes=dtypes or None, max_failures=max_failures,
                                   on_progress=advance)
    except UnknownBackendError as exc:
        raise click.BadParameter(str(exc), param_hint="'NAME'") from None
    except BackendUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@main.command()
@click.option(
    "--suite", type=click.Choice(sorted(SUITES)), default=None,
    help="Named suite of layers to tune.  [default: quick; none when --case is given]",
)
@click.option(
    "--case", "case_specs", multiple=True, metavar="SPEC",
    help=f"A custom layer to tune (repeatable; with --suite, added to it). SPEC is "
         f"{SPEC_HELP}.",
)
@click.option(
    "--op", "op_spec", default=",".join(OPERATIONS), show_default=True, metavar="OP[,OP...]",
    help="Operations, comma-separated.",
)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--show", is_flag=True,
              help="List the stored decisions with their measured times; measure nothing.")
@click.option("--clear", is_flag=True, help="Delete the stored decisions; measure nothing.")
@click.option("--retune", is_flag=True,
              help="Measure the layers again, replacing their stored decisions (e.g. after "
                   "tuning on a busy machine).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr.")
def tune(suite: str | None, case_specs: tuple[str, ...], op_spec: str, dtype: str,
         show: bool, clear: bool, retune: bool, progress: bool) -> None:
    """Measure ahead of time which backend `auto` runs for each layer, and store it.

    Per layer x operation: the backend auto will run, whether it was measured now (tuned),
    read from the wisdom file (stored) or follows the rule (layers too small to measure),
    and each candidate's median time. Later processes read the decisions instead of
    measuring. The wisdom file is in the user cache directory, or CONVKIT_CACHE_DIR.

    \b
    Examples:
      convkit tune --suite standard
      convkit tune --case n=8,c=64,o=128,hw=28,k=3,p=1 --op forward
      convkit tune --suite standard --retune
      convkit tune --show
      convkit tune --clear
    """
    from convkit import autotune

    if show and clear:
        raise click.UsageError("--show and --clear do not go together")
    if (show or clear) and (suite or case_specs):
        raise click.UsageError("--show and --clear measure nothing: drop --suite/--case")
    if clear:
        try:
            count = autotune.clear()
        except OSError as exc:
            raise click.ClickException(f"cannot clear {autotune.cache_path()}: {exc}") from None
        click.echo(f"removed {count} decisions ({autotune.cache_path()})")
        return
    if show:
        _show_decisions(autotune.stored_decisions())
        return
    if not autotune.autotune_enabled():
        raise click.ClickException(
            f"{autotune.AUTOTUNE_ENV}=off: auto follows its rules only; nothing to measure")
    ops = _operations(op_spec)
    cases, _ = _cases(suite if suite or case_specs else "quick", case_specs, None, None)
    rows = []
    with click.progressbar([(c, op) for c in cases for op in ops], label="tuning",
                           file=sys.stderr, hidden=not progress,
                           item_show_func=lambda item: item and f"{item[0].name} {item[1]}",
                           ) as items:
        for case, op in items:
            found = autotune.tune_geometry(case.geometry(dtype), op, retune=retune)
            rows.append((case.name, op, found))
    for name, op, found in rows:
        times = ", ".join(f"{n} {t * 1e3:.3g} ms" for n, t in
                          sorted(found.medians.items(), key=lambda kv: kv[1]))
        cost = f" ({found.tuning_seconds:.1f} s)" if found.source == "tuned" else ""
        click.echo(f"{name:<28} {op:<12} {found.backend:<16} {found.source + cost:<14} "
                   f"{times}")
    click.echo(f"wisdom: {autotune.cache_path()}", err=True)


def _show_decisions(stored: dict) -> None:
    env = stored["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if k != "blas")
    click.echo(f"{stored['path']}\nthis environment: {env['machine']['cpu']}, "
               f"{env['machine']['cores']} cores; {versions}")
    for key, entry in sorted(stored["decisions"].items()):
        medians = {n: statistics.median(t) for n, t in entry.get("times", {}).items() if t}
        times = ", ".join(f"{n} {t * 1e3:.3g} ms"
                          for n, t in sorted(medians.items(), key=lambda kv: kv[1]))
        click.echo(f"{key}\n  -> {entry['backend']} (medians: {times})")
    click.echo(f"{len(stored['decisions'])} decisions for this environment")
    others = stored["other_environments"]
    if others:
        click.echo(f"{sum(others.values())} more for {len(others)} other environments "
                   "(other machines or library versions)")
