"""``convkit backends`` and ``convkit check``: what is installed, and whether a backend
computes what it should (the conformance kit is :mod:`convkit.testing`)."""

from __future__ import annotations

import json
import sys

import click

from convkit.errors import BackendUnavailableError, UnknownBackendError
from convkit.registry import (
    DEFAULT_BACKEND,
    BackendInfo,
    backend_infos,
    backend_problem,
    get_backend,
    selected_backend,
)
from convkit.testing import check_backend
from convkit.text import format_table
from convkit.workload import DTYPES


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def backends(fmt: str) -> None:
    """List the backends, which one runs when none is named, and what each is good at.

    Per backend: installed and usable or not (with the reason, or the install command),
    the distribution that registered it, what it is good at, and what it supports (auto:
    how many decisions it has stored). The first line says which backend a call without
    backend= runs, and what chose it (the default, or CONVKIT_BACKEND). Each backend is
    loaded to find out.
    """
    try:
        selected, chosen_by = selected_backend()
    except (UnknownBackendError, BackendUnavailableError) as exc:
        selected, chosen_by = None, f"none: {exc}"
    entries = [_entry(info, selected, chosen_by) for info in backend_infos()]
    if fmt == "json":
        click.echo(json.dumps(entries, indent=2))
        return
    if selected is None:
        click.echo(f"calls without backend= fail: {chosen_by}")
    else:
        click.echo(f"calls without backend= run {selected} (chosen by {chosen_by})")
    rows = [
        (f"{e['name']} *" if e["selected"] else e["name"], e["status"], e["distribution"],
         e["description"] or "-", e["supports"] or e["reason"])
        for e in entries
    ]
    click.echo("")
    header = ("backend", "status", "distribution", "good at", "supports / reason")
    for line in format_table(header, rows):
        click.echo(line)
    click.echo(f"\n* runs when no backend is named; the default is {DEFAULT_BACKEND}")


def _entry(info: BackendInfo, selected: str | None, chosen_by: str) -> dict:
    entry = {"name": info.name, "status": "available", "reason": None, "description": None,
             "distribution": info.distribution, "target": info.target, "supports": None,
             "default": info.name == DEFAULT_BACKEND, "selected": info.name == selected,
             "selected_by": chosen_by if info.name == selected else None}
    if not info.installed:
        entry["status"], entry["reason"] = "not installed", info.problem
        return entry
    problem = backend_problem(info.name)
    if problem is not None:
        entry["status"], entry["reason"] = "unavailable", problem
        return entry
    backend = get_backend(info.name)
    entry["description"] = backend.description or None
    entry["supports"] = backend.capabilities.describe()
    if info.name == "auto":
        from convkit.autotune import decision_count

        entry["decisions"] = decision_count()
        entry["supports"] += f"; {entry['decisions']} decisions stored"
    return entry


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
