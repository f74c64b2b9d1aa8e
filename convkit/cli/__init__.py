"""The ``convkit`` command: a click group of one module per family of subcommands.

``convkit bench`` times backends side by side, ``convkit compare`` judges two of its JSON
reports, ``convkit plot`` draws one (:mod:`convkit.cli.bench_commands`); ``convkit
backends`` lists what is installed and ``convkit check`` runs the conformance suite against
one backend (:mod:`convkit.cli.backend_commands`); ``convkit tune`` measures and shows
auto's decisions (:mod:`convkit.cli.tune_command`). Results go to stdout (or
``--output``), progress to stderr.
"""

from __future__ import annotations

import click

import convkit
from convkit.cli.backend_commands import backends, check
from convkit.cli.bench_commands import bench, compare, plot
from convkit.cli.tune_command import tune


@click.group()
@click.version_option(convkit.__version__, prog_name="convkit")
def main() -> None:
    """convkit: 2-D convolution on the CPU with pluggable backends."""


for _command in (bench, compare, plot, backends, check, tune):
    main.add_command(_command)
