"""``python -m convkit``: the ``convkit`` command."""

from convkit.cli import main

main(prog_name="convkit")
