"""``conv_transpose2d`` and its two gradients, with torch.nn.functional semantics.

A transposed convolution is the input gradient of a convolution, so every backend computes
one through its ``backward_input``; nothing here needs a new backend method.

The convolution. ``conv_transpose2d(x, w)`` with ``x: (N, Cin, H, W)`` and
``w: (Cin, Cout / groups, kh, kw)`` scatters input pixel ``i`` to output rows
``i*s - p + k*d`` (``k < kh``). That is the input gradient of a convolution (a
:class:`~convkit.ConvGeometry`) of an image of ``Cout`` channels by ``w`` (read as a conv2d
weight: ``Cin`` output channels) whose output is ``H x W``. Its padding is ``p`` at the top
and ``p - output_padding`` at the bottom (likewise left/right): then the conv2d output size
formula gives exactly ``H``, with no row left over. When ``output_padding > p`` that
bottom padding would be negative: the last ``output_padding - p`` rows of the transposed
output are then reached by no input pixel (they are zero), and the convolution's image stops
above them (bottom padding 0). The image height is therefore
``Ho - max(0, output_padding - p)`` with ``Ho = (H-1)*s - 2p + d*(kh-1) + output_padding + 1``.

Its gradients follow: w.r.t. ``x`` it is that convolution's forward pass applied to
``grad_output`` (cropped to the reached rows), w.r.t. ``w`` that convolution's weight gradient
with ``grad_output`` as the image and ``x`` as the output gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from convkit.functional import (
    _add_bias,
    _check_grad_output,
    _checked_bias,
    _float_arrays,
    _run,
)
from convkit.geometry import (
    ConvGeometry,
    IntPair,
    _shape4,
    check_sizes,
    int_pair,
    positive_int,
)

__all__ = ["conv_transpose2d", "conv_transpose2d_input_grad", "conv_transpose2d_weight_grad"]


@dataclass(frozen=True)
class TransposedGeometry:
    """A resolved transposed convolution ``x: (N, Cin, H, W)`` -> ``y: (N, Cout, Ho, Wo)``.

    ``conv`` is the convolution whose input gradient it is: its ``output_shape`` is ``x``'s
    shape, its ``weight_shape`` the weight's ``(Cin, Cout / groups, kh, kw)`` and its
    ``input_shape`` the rows/columns of ``y`` that some input pixel reaches, a top-left
    corner of ``y``; the rest of ``y`` is zero.
    """

    conv: ConvGeometry
    out_size: tuple[int, int]

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """``(N, Cin, H, W)``."""
        return self.conv.output_shape

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """``(Cin, Cout / groups, kh, kw)``."""
        return self.conv.weight_shape

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """``(N, Cout, Ho, Wo)``."""
        return (self.conv.batch, self.conv.in_channels, *self.out_size)

    def reached(self, y: np.ndarray) -> np.ndarray:
        """The part of ``y: (N, Cout, Ho, Wo)`` that some input pixel reaches (a view)."""
        h, w = self.conv.in_size
        return y[:, :, :h, :w]

    def pad_unreached(self, reached: np.ndarray) -> np.ndarray:
        """``reached`` (``conv.input_shape``) with the unreached rows/columns as zeros."""
        (h, w), (ho, wo) = self.conv.in_size, self.out_size
        if (h, w) == (ho, wo):
            return reached
        return np.pad(reached, ((0, 0), (0, 0), (0, ho - h), (0, wo - w)))


def transposed_geometry(
    input_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
    dtype: np.dtype | type = np.float64,
    *,
    input_name: str = "x",
    weight_name: str = "weight",
) -> TransposedGeometry:
    """Validate conv_transpose2d parameters against PyTorch's rules and resolve them.

    input_shape: ``(N, Cin, H, W)``; weight_shape: ``(Cin, Cout / groups, kh, kw)``.
    Raises ``ValueError`` or ``TypeError`` whose message names the parameter and the rule.
    """
    n, cin, h, w = _shape4(input_shape, input_name, "(N, Cin, H, W)")
    wcin, coutg, kh, kw = _shape4(weight_shape, weight_name, "(Cin, Cout / groups, kh, kw)")
    sh, sw = int_pair(stride, "stride", minimum=1)
    dh, dw = int_pair(dilation, "dilation", minimum=1)
    ph, pw = padding_pair(padding)
    oph, opw = output_padding_pair(output_padding, (sh, sw), (dh, dw))
    groups = positive_int(groups, "groups")
    if cin % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({cin})")
    if wcin != cin:
        raise ValueError(
            f"{weight_name} must have shape (Cin, Cout / groups, kh, kw) with Cin = {cin}, the "
            f"channels of {input_name}; got {weight_name}[0] = {wcin}"
        )
    check_sizes((h, w), input_name, (kh, kw), weight_name)
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    wo = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    if ho < 1 or wo < 1:
        raise ValueError(
            f"padding={padding!r} is too large: the output would be {ho}x{wo}; "
            "(H-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1 must be at least 1"
        )
    conv = ConvGeometry(
        n, coutg * groups, cin,
        (ho - max(0, oph - ph), wo - max(0, opw - pw)),
        (kh, kw), (sh, sw),
        (ph, max(0, ph - oph), pw, max(0, pw - opw)),
        (dh, dw), groups, np.dtype(dtype),
    )
    assert conv.out_size == (h, w), (conv, h, w)
    return TransposedGeometry(conv, (ho, wo))


def padding_pair(padding: IntPair) -> tuple[int, int]:
    """``padding`` as a pair of non-negative ints; no 'same' or 'valid', as in PyTorch."""
    if isinstance(padding, str):
        raise ValueError(
            f"padding must be an int or a pair of ints for a transposed convolution, got "
            f"{padding!r} (PyTorch's conv_transpose2d does not accept 'same' or 'valid')"
        )
    return int_pair(padding, "padding", minimum=0)


def output_padding_pair(
    output_padding: IntPair, stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int]:
    """``output_padding`` as a pair; each non-negative and below its stride or dilation."""
    pair = int_pair(output_padding, "output_padding", minimum=0)
    if any(op >= max(s, d) for op, s, d in zip(pair, stride, dilation, strict=True)):
        raise ValueError(
            f"output_padding must be smaller than either stride or dilation in each dimension "
            f"(as in PyTorch), got output_padding={output_padding!r} with stride={stride} and "
            f"dilation={dilation}"
        )
    return pair


def conv_transpose2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
    *,
    backend: str | None = None,
) -> np.ndarray:
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    x: ``(N, Cin, H, W)``; weight: ``(Cin, Cout / groups, kh, kw)``; bias: ``(Cout,)`` or
    None. stride, dilation: int or ``(h, w)``, at least 1. padding: int or ``(h, w)``, at
    least 0, removed from both sides of the output. output_padding: int or ``(h, w)`` added to
    the bottom/right, smaller than stride or dilation. Returns ``y: (N, Cout, Ho, Wo)``,
    ``Ho = (H-1)*stride - 2*padding + dilation*(kh-1) + output_padding + 1``, in the input's
    dtype (float32 or float64).
    """
    x, weight = _float_arrays(x, "x", weight, "weight")
    geom = transposed_geometry(x.shape, weight.shape, stride, padding, output_padding, groups,
                               dilation, x.dtype)
    b = _checked_bias(bias, x, geom.output_shape[1])
    conv = geom.conv
    y = _run(backend, conv, "backward_input", conv.input_shape, x, weight)
    return _add_bias(geom.pad_unreached(y), b)


def conv_transpose2d_input_grad(
    input_shape: tuple[int, int, int, int],
    weight: ArrayLike,
    grad_output: ArrayLike,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
    *,
    backend: str | None = None,
) -> np.ndarray:
    """Gradient of a conv_transpose2d w.r.t. its input (a conv2d of ``grad_output``).

    input_shape: ``(N, Cin, H, W)``; weight: ``(Cin, Cout / groups, kh, kw)``;
    grad_output: ``(N, Cout, Ho, Wo)``. Returns ``grad_x: (N, Cin, H, W)``.
    """
    weight, grad_output = _float_arrays(weight, "weight", grad_output, "grad_output")
    geom = transposed_geometry(input_shape, weight.shape, stride, padding, output_padding,
                               groups, dilation, weight.dtype, input_name="input_shape")
    _check_grad_output(grad_output, geom.output_shape, "transposed convolution")
    conv = geom.conv
    return _run(backend, conv, "forward", conv.output_shape, geom.reached(grad_output), weight)


def conv_transpose2d_weight_grad(
    input: ArrayLike,
    weight_shape: tuple[int, int, int, int],
    grad_output: ArrayLike,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    groups: int = 1,
    dilation: IntPair = 1,
    *,
    backend: str | None = None,
) -> np.ndarray:
    """Gradient of a conv_transpose2d w.r.t. its weight (a conv2d weight gradient with the
    roles of input and output gradient swapped).

    input: ``(N, Cin, H, W)``; weight_shape: ``(Cin, Cout / groups, kh, kw)``;
    grad_output: ``(N, Cout, Ho, Wo)``. Returns ``grad_w: (Cin, Cout / groups, kh, kw)``.
    """
    x, grad_output = _float_arrays(input, "input", grad_output, "grad_output")
    geom = transposed_geometry(x.shape, weight_shape, stride, padding, output_padding, groups,
                               dilation, x.dtype, input_name="input", weight_name="weight_shape")
    _check_grad_output(grad_output, geom.output_shape, "transposed convolution")
    conv = geom.conv
    return _run(backend, conv, "backward_weight", conv.weight_shape, geom.reached(grad_output), x)

