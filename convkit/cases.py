"""Benchmark cases: case spec strings, and the named suites ``convkit bench`` and asv run.

A case is a spec string of ``key=value`` pairs separated by commas (see :data:`SPEC_HELP`),
e.g. ``"n=8,c=64,o=128,hw=28,k=3,p=1"``; :func:`parse_case` reads it into a
:class:`~convkit.workload.ConvCase` and :func:`case_spec` writes one back. The suites are
written as specs in :mod:`convkit.suites`; :data:`SUITES` holds them parsed. Both the CLI
harness and ``benchmarks/`` (asv) read :data:`SUITES`.
"""

from __future__ import annotations

import dataclasses

from convkit.geometry import IntPair, Padding
from convkit.suites import SUITES as SUITE_SPECS
from convkit.workload import ConvCase

SPEC_HELP = (
    "comma-separated key=value: n batch, c input channels, o output channels, "
    "hw (or h and w) input size, k (or kh and kw) kernel size, s stride (int or HxW), "
    "p padding (int, HxW such as 1x2, 'same' or 'valid'), d dilation (int or HxW), "
    "g groups, name; "
    "c, o, hw and k are required. Example: n=8,c=64,o=128,hw=28,k=3,p=1"
)

_INT_KEYS = {"n", "c", "o", "hw", "h", "w", "k", "kh", "kw", "g"}
_PAIR_KEYS = {"s", "d"}


def parse_case(spec: str) -> ConvCase:
    """A :class:`~convkit.workload.ConvCase` from a spec string (see :data:`SPEC_HELP`);
    ValueError if malformed."""
    fields: dict[str, str] = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"case spec item {item!r} is not key=value ({SPEC_HELP})")
        if key not in _INT_KEYS | _PAIR_KEYS | {"p", "name"}:
            raise ValueError(f"case spec has unknown key {key!r} ({SPEC_HELP})")
        if key in fields:
            raise ValueError(f"case spec gives {key!r} twice")
        fields[key] = value
    ints: dict[str, int] = {}
    for key in _INT_KEYS & fields.keys():
        try:
            ints[key] = int(fields[key])
        except ValueError:
            raise ValueError(f"case spec {key}={fields[key]!r} must be an integer") from None
    for required, alternative in (("c", None), ("o", None), ("hw", ("h", "w")),
                                  ("k", ("kh", "kw"))):
        if required not in ints and not (alternative and set(alternative) <= ints.keys()):
            raise ValueError(f"case spec needs {required!r} ({SPEC_HELP})")
    groups = ints.get("g", 1)
    case = ConvCase(
        name=fields.get("name", ""),
        input_shape=(ints.get("n", 1), ints["c"], ints.get("h", ints.get("hw", 0)),
                     ints.get("w", ints.get("hw", 0))),
        weight_shape=(ints["o"], ints["c"] // groups if groups > 0 else ints["c"],
                      ints.get("kh", ints.get("k", 0)), ints.get("kw", ints.get("k", 0))),
        stride=_parse_pair("s", fields.get("s", "1")),
        padding=_parse_padding(fields.get("p", "0")),
        dilation=_parse_pair("d", fields.get("d", "1")),
        groups=groups,
    )
    case.geometry()  # raises ValueError naming the bad parameter
    if not case.name:
        case = dataclasses.replace(case, name=_default_name(case))
    return case


def case_spec(case: ConvCase) -> str:
    """``case`` as a spec string that :func:`parse_case` reads back (``noncontiguous`` and
    ``source`` are not part of a spec)."""
    (n, c, h, w), (kh, kw) = case.input_shape, case.kernel
    return (
        f"name={case.name},n={n},c={c},o={case.out_channels},h={h},w={w},kh={kh},kw={kw},"
        f"s={_pair_text(case.stride)},p={_padding_text(case.padding)},"
        f"d={_pair_text(case.dilation)},g={case.groups}"
    )


def _default_name(case: ConvCase) -> str:
    """A short name such as ``n8-c64-o128-28x28-k3x3-p1``; options at their default omitted."""
    (h, w), (kh, kw) = case.size, case.kernel
    padding = _padding_text(case.padding)
    parts = [f"n{case.batch}", f"c{case.in_channels}", f"o{case.out_channels}", f"{h}x{w}",
             f"k{kh}x{kw}"]
    for key, value, default in (("s", _pair_text(case.stride), "1"), ("p", padding, "0"),
                                ("d", _pair_text(case.dilation), "1"), ("g", case.groups, 1)):
        if value != default:
            parts.append(f"{key}{value}")
    return "-".join(parts)


def _padding_text(padding: Padding) -> str:
    """``padding`` as a spec writes it: ``'1'``, ``'1x2'``, ``'same'`` or ``'valid'``."""
    return "x".join(map(str, padding)) if isinstance(padding, tuple) else str(padding)


def _pair_text(value: IntPair) -> str:
    """A stride or dilation as a spec writes it: ``'2'``, or ``'1x2'`` where they differ."""
    if isinstance(value, tuple):
        return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"
    return str(value)


def _parse_pair(key: str, text: str) -> IntPair:
    """``'2'`` or ``'1x2'`` (rows x columns)."""
    try:
        parts = tuple(int(part) for part in text.split("x"))
    except ValueError:
        parts = ()
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts  # type: ignore[return-value]
    raise ValueError(f"case spec {key}={text!r} must be an integer or HxW")


def _parse_padding(text: str) -> Padding:
    """``'1'``, ``'1x2'`` (rows x columns), ``'same'`` or ``'valid'``."""
    if text in ("same", "valid"):
        return text  # type: ignore[return-value]
    try:
        return _parse_pair("p", text)
    except ValueError:
        raise ValueError(
            f"case spec p={text!r} must be an int, HxW, 'same' or 'valid'") from None


#: The named suites as cases, in the order their specs are written (:mod:`convkit.suites`).
SUITES: dict[str, tuple[ConvCase, ...]] = {
    suite: tuple(parse_case(spec) for spec in specs) for suite, specs in SUITE_SPECS.items()
}
