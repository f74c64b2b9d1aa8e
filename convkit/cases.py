"""Benchmark cases: named convolution layers and the suites ``convkit bench`` and asv run.

This module is the single source of truth for what is benchmarked; both the CLI harness and
``benchmarks/`` (asv) read :data:`SUITES`.

A custom case is a spec string of ``key=value`` pairs separated by commas (see
:data:`SPEC_HELP`), e.g. ``"n=8,c=64,o=128,hw=28,k=3,p=1"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from convkit.geometry import ConvGeometry, Padding, make_geometry


@dataclass(frozen=True)
class BenchCase:
    """A layer to time: ``x: (batch, in_channels, *size)``, kernel ``kernel`` and options."""

    name: str
    batch: int
    in_channels: int
    out_channels: int
    size: tuple[int, int]
    kernel: tuple[int, int]
    stride: int = 1
    padding: Padding = 0
    dilation: int = 1
    groups: int = 1

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, *self.size)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    @property
    def params(self) -> dict:
        """Keyword arguments for conv2d and its gradients."""
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups}

    def geometry(self, dtype: str = "float32") -> ConvGeometry:
        """The validated geometry (raises ValueError for an impossible case)."""
        return make_geometry(self.input_shape, self.weight_shape, dtype=np.dtype(dtype),
                             **self.params)

    def spec(self) -> str:
        """This case as a spec string that :func:`parse_case` reads back."""
        return (
            f"name={self.name},n={self.batch},c={self.in_channels},o={self.out_channels},"
            f"h={self.size[0]},w={self.size[1]},kh={self.kernel[0]},kw={self.kernel[1]},"
            f"s={self.stride},p={_padding_text(self.padding)},d={self.dilation},"
            f"g={self.groups}"
        )


def _case(name: str, n: int, c: int, o: int, hw: int, k: int, **options: object) -> BenchCase:
    return BenchCase(name, n, c, o, (hw, hw), (k, k), **options)  # type: ignore[arg-type]


#: Small layers: the whole suite, all backends, runs in about a minute on 2 cores.
QUICK_SUITE: tuple[BenchCase, ...] = (
    _case("rgb32-3x3", 8, 3, 16, 32, 3, padding=1),
    _case("mnist28-5x5", 16, 1, 8, 28, 5),
    _case("dense28-3x3", 4, 32, 32, 28, 3, padding=1),
    _case("strided28-3x3", 4, 32, 64, 28, 3, stride=2, padding=1),
    _case("pointwise28-1x1", 4, 64, 64, 28, 1),
    _case("depthwise28-3x3", 4, 64, 64, 28, 3, padding=1, groups=64),
)

#: Layers people run: ResNet-style 3x3 blocks, a strided 3x3, a pointwise 1x1, a depthwise
#: 3x3, the 7x7 stride-2 stem, and the small RGB and MNIST layers of from-scratch tutorials.
STANDARD_SUITE: tuple[BenchCase, ...] = (
    _case("resnet56-3x3-64", 8, 64, 64, 56, 3, padding=1),
    _case("resnet28-3x3-128", 8, 128, 128, 28, 3, padding=1),
    _case("resnet14-3x3-256", 8, 256, 256, 14, 3, padding=1),
    _case("strided56-3x3-64to128", 8, 64, 128, 56, 3, stride=2, padding=1),
    _case("pointwise28-1x1-128to256", 8, 128, 256, 28, 1),
    _case("depthwise56-3x3-128", 8, 128, 128, 56, 3, padding=1, groups=128),
    _case("stem224-7x7-s2", 2, 3, 64, 224, 7, stride=2, padding=3),
    _case("cifar32-3x3-3to32", 32, 3, 32, 32, 3, padding=1),
    _case("mnist28-3x3-1to32", 32, 1, 32, 28, 3),
)

SUITES: dict[str, tuple[BenchCase, ...]] = {"quick": QUICK_SUITE, "standard": STANDARD_SUITE}

SPEC_HELP = (
    "comma-separated key=value: n batch, c input channels, o output channels, "
    "hw (or h and w) input size, k (or kh and kw) kernel size, s stride, "
    "p padding (int, HxW such as 1x2, 'same' or 'valid'), d dilation, g groups, name; "
    "c, o, hw and k are required. Example: n=8,c=64,o=128,hw=28,k=3,p=1"
)

_INT_KEYS = {"n", "c", "o", "hw", "h", "w", "k", "kh", "kw", "s", "d", "g"}


def parse_case(spec: str) -> BenchCase:
    """A :class:`BenchCase` from a spec string (see :data:`SPEC_HELP`); ValueError if malformed."""
    fields: dict[str, str] = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"case spec item {item!r} is not key=value ({SPEC_HELP})")
        if key not in _INT_KEYS | {"p", "name"}:
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
    padding = _parse_padding(fields.get("p", "0"))
    case = BenchCase(
        name=fields.get("name", ""),
        batch=ints.get("n", 1),
        in_channels=ints["c"],
        out_channels=ints["o"],
        size=(ints.get("h", ints.get("hw", 0)), ints.get("w", ints.get("hw", 0))),
        kernel=(ints.get("kh", ints.get("k", 0)), ints.get("kw", ints.get("k", 0))),
        stride=ints.get("s", 1),
        padding=padding,
        dilation=ints.get("d", 1),
        groups=ints.get("g", 1),
    )
    case.geometry()  # raises ValueError naming the bad parameter
    if not case.name:
        case = dataclasses.replace(case, name=_default_name(case))
    return case


def _default_name(case: BenchCase) -> str:
    """A short name such as ``n8-c64-o128-28x28-k3x3-p1``; options at their default omitted."""
    (h, w), (kh, kw) = case.size, case.kernel
    padding = _padding_text(case.padding)
    parts = [f"n{case.batch}", f"c{case.in_channels}", f"o{case.out_channels}", f"{h}x{w}",
             f"k{kh}x{kw}"]
    for key, value, default in (("s", case.stride, 1), ("p", padding, "0"),
                                ("d", case.dilation, 1), ("g", case.groups, 1)):
        if value != default:
            parts.append(f"{key}{value}")
    return "-".join(parts)


def _padding_text(padding: Padding) -> str:
    """``padding`` as a spec writes it: ``'1'``, ``'1x2'``, ``'same'`` or ``'valid'``."""
    return "x".join(map(str, padding)) if isinstance(padding, tuple) else str(padding)


def _parse_padding(text: str) -> Padding:
    """``'1'``, ``'1x2'`` (rows x columns), ``'same'`` or ``'valid'``."""
    if text in ("same", "valid"):
        return text  # type: ignore[return-value]
    try:
        parts = tuple(int(part) for part in text.split("x"))
    except ValueError:
        parts = ()
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts  # type: ignore[return-value]
    raise ValueError(f"case spec p={text!r} must be an int, HxW, 'same' or 'valid'")
