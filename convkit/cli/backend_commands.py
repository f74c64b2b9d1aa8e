"""``convkit backends`` and ``convkit check``: what is installed, and whether a backend
computes what it should (the conformance kit is :mod:`convkit.testing`)."""

from __future__ import annotations

import json
import sys

import click

from convkit.errors import BackendUnavailableError, UnknownBackendError
from convkit.registry import DEFAULT_BACKEND, backend_infos, backend_problem, get_backend
from convkit.testing import check_backend
from convkit.text import format_table
from convkit.workload import DTYPES


@click.command()
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


@click.command()
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
