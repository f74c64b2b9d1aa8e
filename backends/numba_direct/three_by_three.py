"""Stride-1 3x3 kernels: all nine taps in one pass, two output channels at a time.

3x3 kernels (the common size) apply all nine taps in one pass, for two output channels at
a time (each loaded input vector feeds 18 multiply-adds; :mod:`._taps`). Their jobs are cut
into one contiguous run per thread, and each thread pads the planes it works on into its
own scratch, so the input is read once and never copied whole: forward over (image, pair of
output channels); weight gradient over pairs of output channels, checking each input plane
for NaN/Inf as it is padded (such a plane takes exact row sums); and the input gradient is
the forward kernel run over the output gradient with the flipped, transposed weight.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._common import transposed_convolution, transposed_geometry
from convkit_backends.numba_direct._helpers import (
    _FLAGS,
    _STEP,
    _all_finite,
    _chunk,
    _copy_into,
    _gather_dot,
    _group_pair,
    _jit,
    _pair_job,
    _pair_runs,
    thread_runs,
)
from convkit_backends.numba_direct._runtime import jit
from convkit_backends.numba_direct._taps import _pair_dots, _pair_taps, _store_pair, _tap_views


@_jit
def _forward_3x3(x, w, y, pt, pl, dh, dw, groups, hp, wp, threads):
    """Stride-1 3x3 forward from the unpadded ``x``: nine taps in one pass per channel.

    Jobs are (image, pair of output channels of a group) in order, cut into one contiguous
    run per thread (``threads`` runs at most). A thread pads the ``Cg`` input planes of the
    image and group it works on into its own ``(Cg, Hp, Wp)`` scratch (zero border written
    once; the group's next pairs reuse it), so the input is read once and no padded copy of
    it is made. Output ``(i, j)`` is computed at ``i*Wp + j`` of an ``(Ho, Wp)`` scratch
    plane, as in :func:`_forward_unit_stride`, and its ``Wo`` real columns are copied to
    ``y``. A group with an odd number of outputs (depthwise: one) ends with a single one.
    """
    n_img, _, h, wd = x.shape
    c_out, cg = w.shape[:2]
    ho, cog = y.shape[2], c_out // groups
    r1, r2, b1, b2 = dh * wp, 2 * dh * wp, dw, 2 * dw
    length = ho * wp - b2  # the last row's scratch tail would read past the plane
    padded = (hp, wp) != (h, wd)
    pairs, jobs, chunks = _pair_runs(n_img, groups, cog, threads)
    # per-thread scratch, allocated here: arrays allocated inside prange were measured slower
    planes = np.zeros((chunks, cg if padded else 0, hp, wp), y.dtype)
    accs = np.empty((chunks, 2, ho * wp), y.dtype)
    for t in numba.prange(chunks):
        xl, acc = planes[t], accs[t]
        loaded = -1  # the (image, group) whose planes xl holds
        lo, hi = _chunk(t, chunks, jobs)
        for job in range(lo, hi):
            n, ng, o, c0, two = _pair_job(job, pairs, groups, cog, cg)
            if padded and ng != loaded:
                for c in range(cg):
                    _copy_into(xl[c], x[n, c0 + c], pt, pl)
                loaded = ng
            for c in range(cg):
                s = (xl[c] if padded else x[n, c0 + c]).reshape(hp * wp)
                _pair_taps(acc, _tap_views(s, r1, r2, b1, b2), w, o, c, two, length)
            _store_pair(y[n], acc, o, two)


@jit(inline="always", fastmath=_FLAGS)
def _dots_rows(k, g, s, wo: int, dh: int, dw: int):
    """``k[a, b] += sum g[i, j] * s[i + a*dh, j + b*dw]`` over the ``(Ho, Wo)`` real outputs.

    ``g: (Ho, Wp)``, ``s: (Hp, Wp)``: exact, no scratch column is read (for non-finite ``s``).
    """
    for a in range(k.shape[0]):
        for b in range(k.shape[1]):
            total = k[a, b]
            for i in range(g.shape[0]):
                total = _gather_dot(g[i], s[i + a * dh], 0, wo, 1, b * dw, total)
            k[a, b] = total


@_jit
def _backward_weight_3x3(x, gy, gw, pt, pl, dh, dw, groups, hp, wp, threads):
    """Stride-1 3x3 weight gradient from the unpadded ``x`` and ``gy``: nine sums per pass.

    Jobs are pairs of output channels of a group (as in :func:`_forward_3x3`), cut into
    one contiguous run per thread. Image by image, a thread pads the group's ``Cg`` input
    planes into its own scratch (once per image and group) and widens each pair's output
    gradient planes into its own ``(2, Ho*Wp)`` scratch (zero scratch columns written
    once); then each tap's sum is one long dot product (see
    :func:`_backward_weight_unit_stride`). The zero scratch columns meet real inputs, so a
    plane holding a NaN or Inf takes exact row-by-row sums instead.
    """
    n_img, c_out, cg = x.shape[0], gw.shape[0], gw.shape[1]
    ho, wo = gy.shape[2], gy.shape[3]
    cog = c_out // groups
    r1, r2, b1, b2 = dh * wp, 2 * dh * wp, dw, 2 * dw
    # rounded up to whole vector steps: no scalar remainder loop, which was measured to cost
    # 10-20%; the extra products are zeros of the scratch tails times zeros or finite x
    length = -(-(ho * wp - b2) // _STEP) * _STEP
    pairs, jobs, chunks = _pair_runs(1, groups, cog, threads)  # each run goes over every image
    planes = np.zeros((chunks, cg, hp * wp + _STEP), gw.dtype)  # allocated here, see _forward_3x3
    finite = np.empty((chunks, cg), np.bool_)
    wides = np.zeros((chunks, 2, ho * wp + _STEP), gw.dtype)
    for t in numba.prange(chunks):
        xl, ok, wide = planes[t], finite[t], wides[t]  # wide: (2, Ho*Wp + _STEP), flat
        gl0, gl1 = wide[0, :ho * wp].reshape(ho, wp), wide[1, :ho * wp].reshape(ho, wp)
        lo, hi = _chunk(t, chunks, jobs)
        for n in range(n_img):
            loaded = -1  # the group whose input planes xl holds
            for job in range(lo, hi):
                g, o, c0, two = _group_pair(job, pairs, cog, cg)
                if g != loaded:
                    for c in range(cg):
                        _copy_into(xl[c, :hp * wp].reshape(hp, wp), x[n, c0 + c], pt, pl)
                        ok[c] = _all_finite(xl[c])
                    loaded = g
                _copy_into(gl0, gy[n, o], 0, 0)
                if two:
                    _copy_into(gl1, gy[n, o + 1], 0, 0)
                for c in range(cg):
                    s = xl[c]
                    if not ok[c]:
                        xs = s[:hp * wp].reshape(hp, wp)
                        _dots_rows(gw[o, c], gl0, xs, wo, dh, dw)
                        if two:
                            _dots_rows(gw[o + 1, c], gl1, xs, wo, dh, dw)
                    else:
                        _pair_dots(gw, wide, _tap_views(s, r1, r2, b1, b2), o, c, two, length)


def forward(x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``y: (N, Cout, Ho, Wo)`` from the unpadded ``x: (N, C, H, W)``
    (:func:`_forward_3x3`)."""
    y = np.empty(geom.output_shape, geom.dtype)
    pt, _, pl, _ = geom.padding
    _forward_3x3(x, weight, y, pt, pl, *geom.dilation, geom.groups, *geom.padded_size,
                 numba.get_num_threads())
    return y


def backward_input(grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``grad_x: (N, C, H, W)`` as :func:`forward` of ``grad_output: (N, Cout, Ho, Wo)``.

    ``grad_x[n, c, i, j] = sum w[o, c, a, b] * gy[n, o, i + pt - a*dh, j + pl - b*dw]`` is a
    forward pass over ``gy`` with the flipped, transposed weight ``(C, Cout/G, 3, 3)`` and
    padding ``2*d - p`` (:func:`~convkit_backends._common.transposed_convolution`), in an
    ``(H + 2*dh, W + 2*dw)`` frame. Needs padding within ``2*d`` (else the frame would crop
    ``gy``) and finite weights, which the frame's zeros meet.
    """
    flipped, transposed = transposed_convolution(weight, geom)
    return forward(grad_output, flipped, transposed)


def backward_weight(x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``grad_w: (Cout, C/G, 3, 3)`` from the unpadded ``x`` and ``grad_output``
    (:func:`_backward_weight_3x3`)."""
    grad_w = np.zeros(geom.weight_shape, geom.dtype)
    pt, _, pl, _ = geom.padding
    _backward_weight_3x3(x, grad_output, grad_w, pt, pl, *geom.dilation, geom.groups,
                         *geom.padded_size, numba.get_num_threads())
    return grad_w


def workspace_bytes(geom: ConvGeometry, method: str) -> int:
    """The per-thread scratch the kernels allocate, as they size it: one run of jobs per
    thread (at most ``numba.get_num_threads()`` runs), each with its ``Cg`` padded input
    planes and two ``(Ho, Wp)`` planes (accumulators, or the widened output gradient), and
    for the input gradient also the flipped weight."""
    itemsize = geom.dtype.itemsize
    if method == "backward_input":
        return math.prod(geom.weight_shape) * itemsize + _forward_scratch(transposed_geometry(geom))
    if method == "forward":
        return _forward_scratch(geom)
    (hp, wp), (ho, _), cg = geom.padded_size, geom.out_size, geom.weight_shape[1]
    chunks = thread_runs(1, geom.groups, geom.out_channels // geom.groups)
    return chunks * (cg * (hp * wp + _STEP) + 2 * (ho * wp + _STEP)) * itemsize + chunks * cg


def _forward_scratch(geom: ConvGeometry) -> int:
    """:func:`_forward_3x3`'s scratch: per run, ``Cg`` padded planes (none if unpadded) and
    two ``(Ho, Wp)`` accumulators."""
    (hp, wp), (ho, _), cg = geom.padded_size, geom.out_size, geom.weight_shape[1]
    planes = cg * hp * wp if any(geom.padding) else 0
    runs = thread_runs(geom.batch, geom.groups, geom.out_channels // geom.groups)
    return runs * (planes + 2 * ho * wp) * geom.dtype.itemsize
