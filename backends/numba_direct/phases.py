"""Strided layers without dilation as sums of stride-1 convolutions of the input's phases.

Tap ``(a, b)`` of a stride-``(sh, sw)`` convolution reads padded row ``i*sh + a``: the taps of
one row and column remainder form a sub-kernel that slides with stride 1 over one phase of
the padded input (:func:`_phases`). Each of these stride-1 convolutions runs through the
backend again (:mod:`.choice`: the stride-1 families), and the phases' results are summed
(forward), interleaved (input gradient) or interleaved into the weight gradient. This takes
the strides and kernels the 3x3 stride-2 kernels do not, and their non-finite cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._common import crop, pad
from convkit_backends._workspace import padded_bytes

#: The backend's method for a stride-1 sub-problem: ``(a, b, sub_geometry) -> result``.
SubCall = Callable[[np.ndarray, np.ndarray, ConvGeometry], np.ndarray]


def forward(
    x: np.ndarray, weight: np.ndarray, geom: ConvGeometry, sub_call: SubCall
) -> np.ndarray:
    """``y: (N, Cout, Ho, Wo)``: the sum over phases of ``sub_call`` (the backend's forward)
    on the phase of the padded ``x`` and the sub-kernel."""
    y = np.zeros(geom.output_shape, geom.dtype)
    xp = pad(x, geom)
    for rows, cols, sub in _phases(geom):
        y += sub_call(_phase(xp, rows, cols, sub), _phase(weight, rows, cols), sub)
    return y


def backward_input(
    grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry, sub_call: SubCall
) -> np.ndarray:
    """``grad_x: (N, C, H, W)``: each phase's input gradient (``sub_call``) written into its
    rows and columns of the padded input gradient, which is then cropped."""
    grad_xp = np.zeros((geom.batch, geom.in_channels, *geom.padded_size), geom.dtype)
    for rows, cols, sub in _phases(geom):
        grad_phase = sub_call(grad_output, _phase(weight, rows, cols), sub)
        _phase(grad_xp, rows, cols, sub, copy=False)[...] = grad_phase
    return np.ascontiguousarray(crop(grad_xp, geom))


def backward_weight(
    x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry, sub_call: SubCall
) -> np.ndarray:
    """``grad_w: (Cout, C/G, kh, kw)``: each sub-kernel's gradient (``sub_call`` on the phase
    of the padded ``x``) into its taps."""
    grad_w = np.zeros(geom.weight_shape, geom.dtype)
    xp = pad(x, geom)
    for rows, cols, sub in _phases(geom):
        grad_w[:, :, rows, cols] = sub_call(_phase(xp, rows, cols, sub), grad_output, sub)
    return grad_w


def workspace_bytes(geom: ConvGeometry, method: str,
                    sub_workspace: Callable[[ConvGeometry, str], int]) -> int:
    """The padded input (forward, weight gradient; none without padding) or the padded input
    gradient, plus the largest phase's buffers: its input (a copy, or its input gradient),
    its sub-kernel (a copy, or its gradient), the forward's sum term, and ``sub_workspace``
    (the backend's workspace for the stride-1 sub-problem)."""
    n, itemsize = geom.batch, geom.dtype.itemsize
    padded = any(geom.padding) or method == "backward_input"
    largest = max(padded_bytes(sub, n) + math.prod(sub.weight_shape) * itemsize
                  + sub_workspace(sub, method) for _, _, sub in _phases(geom))
    if method == "forward":
        largest += math.prod(geom.output_shape) * itemsize
    return (padded_bytes(geom, n) if padded else 0) + largest


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

