"""The numba backend: direct convolution as numba-compiled loops, no im2col.

Other strides without dilation, and the non-finite cases the 3x3 stride-2 kernels cannot
take, are sums of stride-1 convolutions of the input's phases (:func:`_phases`). Strided
dilated layers, and the non-finite cases above, run row by row with loops clipped to the
pixels inside the image (:mod:`.general`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numba
import numpy as np

from convkit.backend import ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends._common import crop, pad
from convkit_backends._nonfinite import forward_padding_nan, weight_grad_padding_nan
from convkit_backends.numba_direct._threads import serialised_on_unsafe_layer
from convkit_backends.numba_direct.general import _backward_input, _backward_weight, _forward
from convkit_backends.numba_direct.stride_two import (
    _backward_input_3x3_stride2,
    _backward_weight_3x3_stride2,
    _forward_3x3_stride2,
)
from convkit_backends.numba_direct.three_by_three import _backward_weight_3x3, _forward_3x3
from convkit_backends.numba_direct.wide import (
    _backward_input_unit_stride,
    _backward_weight_unit_stride,
    _forward_unit_stride,
)


class NumbaBackend(ConvBackend):
    """Parallel direct-convolution loops compiled by numba."""

    @serialised_on_unsafe_layer
    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        y = np.empty(geom.output_shape, geom.dtype)
        if geom.stride == (1, 1) and geom.kernel_size == (3, 3):  # pads as it goes
            pt, _, pl, _ = geom.padding
            _forward_3x3(x, weight, y, pt, pl, *geom.dilation, geom.groups, *geom.padded_size,
                         numba.get_num_threads())
        elif geom.stride == (1, 1):  # scratch columns are dropped: no condition
            _forward_unit_stride(pad(x, geom), weight, y, *_unit_stride_args(geom))
        elif _is_3x3_stride2(geom):
            pt, _, pl, _ = geom.padding
            _forward_3x3_stride2(x, weight, y, pt, pl, geom.groups, *geom.padded_size,
                                 numba.get_num_threads())
        elif geom.dilation == (1, 1):
            y[...] = 0
            xp = pad(x, geom)
            for rows, cols, sub in _phases(geom):
                y += self.forward(_phase(xp, rows, cols, sub), _phase(weight, rows, cols), sub)
        else:  # clipped loops skip the padding: restore its Inf * 0 = NaN
            _forward(x, weight, y, *_loop_args(geom))
            forward_padding_nan(y, weight, geom)
        return y

    @serialised_on_unsafe_layer
    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        if _is_3x3_stride2(geom) and np.isfinite(weight).all():
            grad_x = np.empty(geom.input_shape, geom.dtype)
            pt, _, pl, _ = geom.padding
            _backward_input_3x3_stride2(grad_output, weight, grad_x, pt, pl, geom.groups,
                                        numba.get_num_threads())
            return grad_x
        finite_weight = geom.stride == (1, 1) and np.isfinite(weight).all()
        if finite_weight and geom.kernel_size == (3, 3) and _padding_within_kernel(geom):
            return _input_grad_3x3(grad_output, weight, geom)
        if finite_weight:
            grad_xp = np.empty((geom.batch, geom.in_channels, *geom.padded_size), geom.dtype)
            _backward_input_unit_stride(_widen(grad_output, geom), weight, grad_xp,
                                        *_unit_stride_args(geom))
            return np.ascontiguousarray(crop(grad_xp, geom))
        if geom.stride != (1, 1) and geom.dilation == (1, 1):
            grad_xp = np.zeros((geom.batch, geom.in_channels, *geom.padded_size), geom.dtype)
            for rows, cols, sub in _phases(geom):
                grad_phase = self.backward_input(grad_output, _phase(weight, rows, cols), sub)
                _phase(grad_xp, rows, cols, sub, copy=False)[...] = grad_phase
            return np.ascontiguousarray(crop(grad_xp, geom))
        grad_x = np.empty(geom.input_shape, geom.dtype)
        _backward_input(grad_output, weight, grad_x, *_loop_args(geom))
        return grad_x

    @serialised_on_unsafe_layer
    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        grad_w = np.zeros(geom.weight_shape, geom.dtype)
        if geom.stride == (1, 1) and geom.kernel_size == (3, 3):  # checks x as it goes
            pt, _, pl, _ = geom.padding
            _backward_weight_3x3(x, grad_output, grad_w, pt, pl, *geom.dilation, geom.groups,
                                 *geom.padded_size, numba.get_num_threads())
        elif geom.stride == (1, 1) and np.isfinite(x).all():
            _backward_weight_unit_stride(pad(x, geom), _widen(grad_output, geom), grad_w,
                                         *_unit_stride_args(geom))
        elif _is_3x3_stride2(geom) and np.isfinite(x).all():
            pt, _, pl, _ = geom.padding
            _backward_weight_3x3_stride2(x, grad_output, grad_w, pt, pl, geom.groups,
                                         *geom.padded_size, numba.get_num_threads())
        elif geom.stride != (1, 1) and geom.dilation == (1, 1):
            xp = pad(x, geom)
            for rows, cols, sub in _phases(geom):
                grad_w[:, :, rows, cols] = self.backward_weight(
                    _phase(xp, rows, cols, sub), grad_output, sub)
        else:  # clipped loops skip the padding: restore its Inf * 0 = NaN
            _backward_weight(x, grad_output, grad_w, *_loop_args(geom))
            weight_grad_padding_nan(grad_w, grad_output, geom)
        return grad_w


def _is_3x3_stride2(geom: ConvGeometry) -> bool:
    """The geometry of the phase-split kernels: 3x3, stride 2, no dilation."""
    return (geom.kernel_size, geom.stride, geom.dilation) == ((3, 3), (2, 2), (1, 1))


def _padding_within_kernel(geom: ConvGeometry) -> bool:
    """True if no side is padded by more than the kernel's extent ``d*(k-1)``."""
    (kh, kw), (dh, dw), (pt, pb, pl, pr) = geom.kernel_size, geom.dilation, geom.padding
    return max(pt, pb) <= (kh - 1) * dh and max(pl, pr) <= (kw - 1) * dw


def _input_grad_3x3(grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Stride-1 3x3 ``grad_x: (N, C, H, W)`` as :func:`_forward_3x3` of ``grad_output``.

    ``grad_x[n, c, i, j] = sum w[o, c, a, b] * gy[n, o, i + pt - a*dh, j + pl - b*dw]`` is a
    forward pass over ``gy: (N, Cout, Ho, Wo)`` with the flipped, transposed weight
    ``(C, Cout/G, 3, 3)`` and padding ``(2*dh - pt, 2*dw - pl)`` in an ``(H + 2*dh, W + 2*dw)``
    frame. Needs :func:`_padding_within_kernel` (else the frame would crop ``gy``) and finite
    weights, which the frame's zeros meet.
    """
    (dh, dw), (pt, _, pl, _), (h, w) = geom.dilation, geom.padding, geom.in_size
    g, cog, cg = geom.groups, geom.out_channels // geom.groups, geom.weight_shape[1]
    flipped = np.ascontiguousarray(
        weight.reshape(g, cog, cg, 3, 3).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    ).reshape(geom.in_channels, cog, 3, 3)
    grad_x = np.empty(geom.input_shape, geom.dtype)
    _forward_3x3(grad_output, flipped, grad_x, 2 * dh - pt, 2 * dw - pl, dh, dw, g,
                 h + 2 * dh, w + 2 * dw, numba.get_num_threads())
    return grad_x


def _loop_args(geom: ConvGeometry) -> tuple[int, ...]:
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    pt, _, pl, _ = geom.padding
    return sh, sw, pt, pl, dh, dw, geom.groups


def _widen(grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``(N, Cout, Ho, Wo)`` -> ``(N, Cout, Ho, Wp)``, zeros in the scratch columns."""
    wide = np.zeros((*grad_output.shape[:3], geom.padded_size[1]), geom.dtype)
    wide[..., :geom.out_size[1]] = grad_output
    return wide


def _unit_stride_args(geom: ConvGeometry) -> tuple[int, ...]:
    """``dh, dw, groups, length``: the flat length of an ``(Ho, Wp)`` plane that is read."""
    (dh, dw), (ho, _), (_, wp) = geom.dilation, geom.out_size, geom.padded_size
    return dh, dw, geom.groups, ho * wp - (geom.kernel_size[1] - 1) * dw


def _phases(geom: ConvGeometry) -> Iterator[tuple[slice, slice, ConvGeometry]]:
    """Stride ``(sh, sw)``, dilation 1, as ``sh*sw`` stride-1 convolutions of phases.

    Tap ``(a, b)`` reads padded row ``i*sh + a`` = ``(i + a//sh)*sh + a%sh``: the taps with
    ``a % sh == pa`` and ``b % sw == pb`` form a sub-kernel ``w[:, :, pa::sh, pb::sw]`` that
    slides with stride 1 over the phase ``xp[:, :, pa::sh, pb::sw]``, cropped to the rows and
    columns the ``(Ho, Wo)`` outputs read. The convolution is the sum over phases. Yields the
    phase's row and column slices and its unpadded stride-1 geometry.
    """
    (kh, kw), (sh, sw), (ho, wo) = geom.kernel_size, geom.stride, geom.out_size
    for pa in range(min(sh, kh)):
        for pb in range(min(sw, kw)):
            sub_k = (len(range(pa, kh, sh)), len(range(pb, kw, sw)))
            sub = replace(geom, in_size=(ho + sub_k[0] - 1, wo + sub_k[1] - 1),
                          kernel_size=sub_k, stride=(1, 1), padding=(0, 0, 0, 0))
            yield slice(pa, None, sh), slice(pb, None, sw), sub


def _phase(
    a: np.ndarray, rows: slice, cols: slice, sub: ConvGeometry | None = None, copy: bool = True
) -> np.ndarray:
    """``a[:, :, rows, cols]``, cut to ``sub.in_size`` if given; a C-ordered copy if ``copy``."""
    part = a[:, :, rows, cols]
    if sub is not None:
        part = part[:, :, :sub.in_size[0], :sub.in_size[1]]
    return np.ascontiguousarray(part) if copy else part

