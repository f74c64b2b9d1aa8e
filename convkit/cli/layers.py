"""What the commands that take layers share: which layers (``--suite``, ``--case``,
``--batch``, ``--image-size``), which operations (``--op``), which dtype, which backends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import click

from convkit.cases import SPEC_HELP, SUITES, parse_case
from convkit.networks import DEFAULT_BATCH, DEFAULT_IMAGE_SIZE, NETWORKS, network_cases
from convkit.registry import list_backends
from convkit.workload import DTYPES, OPERATIONS, ConvCase

F = TypeVar("F", bound=Callable[..., object])


def layer_options(verb: str) -> Callable[[F], F]:
    """The options that choose layers, operations and dtype; ``verb`` ('time', 'tune') goes
    into their help."""

    def decorate(command: F) -> F:
        for option in reversed([
            click.option(
                "--suite", type=click.Choice([*SUITES, *NETWORKS]), default=None,
                help="Named suite of layers, or a network's convolutions (resnet50, "
                     "mobilenetv2, vgg16, convnext-t: bench then gives the network's totals)."
                     "  [default: quick; none when --case is given]"),
            click.option("--batch", type=click.IntRange(min=1), default=None,
                         help=f"Images per batch for a network suite.  [default: "
                              f"{DEFAULT_BATCH}]"),
            click.option("--image-size", type=click.IntRange(min=1), default=None,
                         help=f"Image side in pixels for a network suite.  [default: "
                              f"{DEFAULT_IMAGE_SIZE}]"),
            click.option("--case", "case_specs", multiple=True, metavar="SPEC",
                         help=f"A custom layer to {verb} (repeatable; with --suite, added to "
                              f"it). SPEC is {SPEC_HELP}."),
            click.option("--op", "op_spec", default=",".join(OPERATIONS), show_default=True,
                         metavar="OP[,OP...]", help="Operations, comma-separated."),
            click.option("--dtype", type=click.Choice(DTYPES), default="float32",
                         show_default=True),
        ]):
            command = option(command)
        return command

    return decorate


def backend_names(spec: str) -> list[str]:
    known = list_backends()
    if spec.strip() == "all":
        return known
    return comma_list(spec, known, "--backend", "backend")


def operations(spec: str) -> tuple[str, ...]:
    return tuple(comma_list(spec, OPERATIONS, "--op", "operation"))


def comma_list(spec: str, allowed: Sequence[str], option: str, what: str) -> list[str]:
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


def selected_layers(
    suite: str | None, specs: tuple[str, ...], batch: int | None, image_size: int | None
) -> tuple[str | None, list[ConvCase], list[int] | None]:
    """The suite in force (the quick suite if neither a suite nor a case was given), the
    cases the layer options chose and, for a network suite, how often each occurs."""
    if suite is None and not specs:
        suite = "quick"
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
                raise click.BadParameter(
                    f"applies to network suites only ({', '.join(NETWORKS)})",
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
    return suite, cases, counts
