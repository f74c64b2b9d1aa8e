"""``convkit tune``: measure ahead of time which backend ``auto`` runs for each layer, show
and clear the stored decisions (:mod:`convkit.autotune`)."""

from __future__ import annotations

import statistics
import sys

import click

from convkit.cli.layers import layer_options, operations, selected_layers


@click.command()
@layer_options("tune")
@click.option("--show", is_flag=True,
              help="List the stored decisions with their measured times; measure nothing.")
@click.option("--clear", is_flag=True, help="Delete the stored decisions; measure nothing.")
@click.option("--retune", is_flag=True,
              help="Measure the layers again, replacing their stored decisions (e.g. after "
                   "tuning on a busy machine).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr.")
def tune(suite: str | None, batch: int | None, image_size: int | None,
         case_specs: tuple[str, ...], op_spec: str, dtype: str, show: bool, clear: bool,
         retune: bool, progress: bool) -> None:
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
    ops = operations(op_spec)
    _, cases, _ = selected_layers(suite, case_specs, batch, image_size)
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
