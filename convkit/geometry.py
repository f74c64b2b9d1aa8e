"""Convolution geometry: normalise and validate the parameters of one conv2d call once.

Everything a backend needs to know about a call, other than the arrays themselves, is in a
:class:`ConvGeometry`: shapes, explicit four-sided padding, stride, dilation, groups and
dtype. It is built by :func:`make_geometry`, which applies PyTorch's ``conv2d`` rules and
raises ``ValueError``/``TypeError`` naming the offending parameter, so backends never
re-validate anything.

Naming follows Chainer's ``conv.py``: ``kh, kw`` kernel size, ``sh, sw`` stride,
``dh, dw`` dilation, ``pt, pb, pl, pr`` padding (top, bottom, left, right).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal

import numpy as np

IntPair = int | tuple[int, int]
Padding = int | tuple[int, int] | Literal["same", "valid"]

#: The dtypes convkit computes in. Output dtype always equals input dtype.
SUPPORTED_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class ConvGeometry:
    """A fully resolved 2-D convolution: ``x: (N, C, H, W) * w: (Cout, C/groups, kh, kw)``.

    ``padding`` is explicit ``(top, bottom, left, right)`` in input pixels.
    """

    batch: int
    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    dtype: np.dtype

    @property
    def out_size(self) -> tuple[int, int]:
        """Output ``(Ho, Wo)``."""
        (h, w), (kh, kw) = self.in_size, self.kernel_size
        (sh, sw), (dh, dw) = self.stride, self.dilation
        pt, pb, pl, pr = self.padding
        return (
            (h + pt + pb - dh * (kh - 1) - 1) // sh + 1,
            (w + pl + pr - dw * (kw - 1) - 1) // sw + 1,
        )

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """``(N, C, H, W)``."""
        return (self.batch, self.in_channels, *self.in_size)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """``(Cout, C / groups, kh, kw)``."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """``(N, Cout, Ho, Wo)``."""
        return (self.batch, self.out_channels, *self.out_size)

    @property
    def padded_size(self) -> tuple[int, int]:
        """``(H + pt + pb, W + pl + pr)``."""
        pt, pb, pl, pr = self.padding
        return (self.in_size[0] + pt + pb, self.in_size[1] + pl + pr)

    @property
    def flops(self) -> int:
        """Floating-point operations of one forward pass (a multiply-add counts as 2).

        Each gradient costs the same number of operations.
        """
        n, cout, ho, wo = self.output_shape
        cg = self.in_channels // self.groups
        kh, kw = self.kernel_size
        return 2 * n * cout * ho * wo * cg * kh * kw

    def with_batch(self, batch: int) -> ConvGeometry:
        """The same convolution on a batch of ``batch`` images (used to process chunks)."""
        return ConvGeometry(
            batch, self.in_channels, self.out_channels, self.in_size, self.kernel_size,
            self.stride, self.padding, self.dilation, self.groups, self.dtype,
        )


def make_geometry(
    input_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    dtype: np.dtype | type = np.float64,
    *,
    input_name: str = "input",
    weight_name: str = "weight",
) -> ConvGeometry:
    """Validate conv2d parameters against PyTorch's rules and resolve them.

    input_shape: ``(N, C, H, W)``; weight_shape: ``(Cout, C / groups, kh, kw)``.
    Raises ``ValueError`` or ``TypeError`` whose message names the parameter; ``input_name``
    and ``weight_name`` are the caller's names for the two shapes.
    """
    n, c, h, w = _shape4(input_shape, input_name, "(N, C, H, W)")
    cout, cg, kh, kw = _shape4(weight_shape, weight_name, "(Cout, C / groups, kh, kw)")
    sh, sw = int_pair(stride, "stride", minimum=1)
    dh, dw = int_pair(dilation, "dilation", minimum=1)
    groups = positive_int(groups, "groups")
    if c % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({c})")
    if cout % groups:
        raise ValueError(f"groups={groups} must divide the output channels ({cout})")
    if cg * groups != c:
        raise ValueError(
            f"{weight_name} has {cg} input channels per group, but {input_name} has {c} "
            f"channels and groups={groups}, so {weight_name}[1] must be {c // groups}"
        )
    check_sizes((h, w), input_name, (kh, kw), weight_name)
    pad = resolve_padding(padding, (kh, kw), (sh, sw), (dh, dw))
    geom = ConvGeometry(
        n, c, cout, (h, w), (kh, kw), (sh, sw), pad, (dh, dw), groups, np.dtype(dtype)
    )
    ph, pw = geom.padded_size
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eh > ph or ew > pw:
        raise ValueError(
            f"{weight_name} kernel size {kh}x{kw} with dilation {dh}x{dw} spans {eh}x{ew}, "
            f"larger than the padded {input_name} {ph}x{pw} (padding={padding!r})"
        )
    return geom


def check_sizes(
    in_size: tuple[int, int], input_name: str, kernel_size: tuple[int, int], weight_name: str
) -> None:
    """Refuse an empty kernel or an empty image (PyTorch allows only N and C to be 0)."""
    (h, w), (kh, kw) = in_size, kernel_size
    if kh < 1 or kw < 1:
        raise ValueError(f"{weight_name} kernel size must be at least 1x1, got {kh}x{kw}")
    if h < 1 or w < 1:
        raise ValueError(
            f"{input_name} has spatial size {h}x{w}; only the batch and channel dimensions "
            "may be 0 (as in PyTorch)"
        )


def resolve_padding(
    padding: Padding,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, int, int]:
    """``padding`` as explicit ``(top, bottom, left, right)``.

    ``'same'`` pads ``d * (k - 1)`` in total, with the extra pixel of an even span at the
    bottom/right, as PyTorch does; it requires stride 1.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"padding='same' requires stride 1, got stride={stride} (as in PyTorch)"
                )
            (kh, kw), (dh, dw) = kernel_size, dilation
            th, tw = dh * (kh - 1), dw * (kw - 1)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ValueError(
            f"padding must be an int, a pair of ints, 'same' or 'valid'; got {padding!r}"
        )
    ph, pw = int_pair(padding, "padding", minimum=0)
    return (ph, ph, pw, pw)


def int_pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """``value`` (an int or a pair of ints, each ``>= minimum``) as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        pair = (_int(value[0], name), _int(value[1], name))
    else:
        pair = (_int(value, name),) * 2
    if min(pair) < minimum:
        rule = "non-negative" if minimum == 0 else f"at least {minimum}"
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return pair


def _is_int(value: object) -> bool:
    """An integer, not a bool (``int`` first: a call spent half its validation in
    ``numbers.Integral``'s ABC check)."""
    return type(value) is int or (isinstance(value, numbers.Integral)
                                  and not isinstance(value, (bool, np.bool_)))


def _int(value: object, name: str) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(value)


def positive_int(value: object, name: str) -> int:
    """``value`` as an int of at least 1; TypeError or ValueError naming ``name``."""
    if not _is_int(value):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _shape4(shape: object, name: str, layout: str) -> tuple[int, int, int, int]:
    try:
        dims = tuple(shape)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name} shape must be a sequence of 4 ints, got {shape!r}") from None
    if len(dims) != 4:
        raise ValueError(f"{name} must be 4-D {layout}, got shape {dims}")
    if any(not _is_int(d) or d < 0 for d in dims):
        raise ValueError(f"{name} shape must hold non-negative ints, got {dims}")
    return tuple(int(d) for d in dims)  # type: ignore[return-value]
