"""Stride-1 forward pass without dilation, two output rows at a time, their sums in registers.

A block is two output rows by ``V`` vectors of columns (:mod:`._vectors`): for each input
channel of the group and each of the ``kh + 1`` input rows the two output rows read, each
tap column loads the row's ``V`` vectors once and adds them, times the taps, to the upper
row (kernel row ``r``) and the lower one (kernel row ``r - 1``). Two multiply-adds per
load, no accumulator in memory, and each output written once, straight into ``y``.

:func:`row_cover` places the vectors: whole blocks of up to ``_MOST_VECTORS`` along a row,
a last block or vector moved back inside the row, and a last odd output row done with the
row above it. The columns and rows covered twice are computed twice, to the same values.

Each thread copies a group's input planes into its own zero-framed ``(Cg, Hp, Wp)`` scratch
when the ``(image, group)`` of its jobs changes; without padding it reads the input itself.
Output rows narrower than a vector, or a single output row, are computed as the layer with
more zero padding at the right or bottom (:func:`_widened`), and cut back.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends.numba_direct._helpers import _chunk, _copy_into, _jit, _output_job
from convkit_backends.numba_direct._runtime import jit
from convkit_backends.numba_direct._vectors import fma_row, lanes, store_row, zero_row

# Vectors per block: 2 rows of 7 take 14 of AVX-512's 32 registers, and cover a row of 56
# float32 columns (ConvNeXt's first stage) without overlap.
_MOST_VECTORS = 7


def applies(geom: ConvGeometry) -> bool:
    """Whether :func:`forward` runs ``geom``: stride 1, no dilation."""
    return geom.stride == (1, 1) and geom.dilation == (1, 1)


def row_cover(width: int, lanes: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Where the blocks go along an output row ``width`` columns wide (``>= lanes``):
    ``starts``, the first column of each block, and ``offsets``, the first column of each of
    a block's vectors from its start."""
    vectors = -(-width // lanes)
    blocks = -(-vectors // _MOST_VECTORS)
    block_width = -(-vectors // blocks) * lanes
    if block_width <= width:
        offsets = tuple(range(0, block_width, lanes))
        starts = [min(b * block_width, width - block_width) for b in range(blocks)]
    else:  # one block, its last vector moved back inside the row
        offsets = (*range(0, block_width - lanes, lanes), width - lanes)
        starts = [0]
    return np.array(starts, np.intp), offsets


@jit(inline="always")
def _one_row(src, at: int, taps, acc, offsets, kw: int):
    """``acc`` plus tap ``b`` of ``taps: (kw,)`` times the vectors at ``src[at + b:]``."""
    for b in range(kw):
        acc = fma_row(acc, taps[b], src, at + b, offsets)
    return acc


@jit(inline="always")
def _both_rows(src, at: int, upper_taps, lower_taps, upper, lower, offsets, kw: int):
    """:func:`_one_row` into ``upper`` and ``lower`` from one input row (its loads shared)."""
    for b in range(kw):
        upper = fma_row(upper, upper_taps[b], src, at + b, offsets)
        lower = fma_row(lower, lower_taps[b], src, at + b, offsets)
    return upper, lower


@jit(inline="always")
def _sum_two_rows(src, at: int, w, y, q: int, wp: int, wo: int, plane: int, offsets, kw: int):
    """Output rows ``y[q:]`` and ``y[q + wo:]`` at ``offsets``, from the flat input planes
    of ``src`` (``plane`` apart, rows ``wp`` apart) whose first row and column are at
    ``at``; ``w: (Cg, kh, kw)``."""
    kh = w.shape[1]
    upper = zero_row(y, offsets)
    lower = zero_row(y, offsets)
    for c in range(w.shape[0]):
        k, first = w[c], at + c * plane
        upper = _one_row(src, first, k[0], upper, offsets, kw)
        for r in range(1, kh):
            upper, lower = _both_rows(src, first + r * wp, k[r], k[r - 1], upper, lower,
                                      offsets, kw)
        lower = _one_row(src, first + kh * wp, k[kh - 1], lower, offsets, kw)
    store_row(y, q, offsets, upper)
    store_row(y, q + wo, offsets, lower)


@jit(nogil=True)
def _two_rows(src, at: int, w, y, q: int, wp: int, wo: int, plane: int, offsets):
    """:func:`_sum_two_rows`. With 7 taps per kernel row the count is a constant, so LLVM
    unrolls the tap loops (8x96x56x56 depthwise 7x7: 1.66-1.77 against 1.9-2.0 ms)."""
    if w.shape[2] == 7:
        _sum_two_rows(src, at, w, y, q, wp, wo, plane, offsets, 7)
    else:
        _sum_two_rows(src, at, w, y, q, wp, wo, plane, offsets, w.shape[2])


@_jit
def _forward(x, w, y, pt, pl, hp, wp, groups, starts, offsets, threads):
    """Jobs ``(image, output channel)`` cut into one run per thread (see the module)."""
    n_img, _, h, wd = x.shape
    c_out, cg = w.shape[:2]
    ho, wo = y.shape[2], y.shape[3]
    cog = c_out // groups
    plane = hp * wp
    padded = (hp, wp) != (h, wd)
    jobs = n_img * c_out
    chunks = min(threads, jobs)
    planes = np.zeros((chunks, cg * plane if padded else 0), y.dtype)
    for t in numba.prange(chunks):
        loaded = -1  # the (image, group) whose planes planes[t] holds
        lo, hi = _chunk(t, chunks, jobs)
        for job in range(lo, hi):
            n, o, c0 = _output_job(job, c_out, cg, groups)
            ng = n * groups + o // cog
            if padded:
                src, at = planes[t], 0
                if ng != loaded:
                    for c in range(cg):
                        _copy_into(src[c * plane:(c + 1) * plane].reshape(hp, wp), x[n, c0 + c],
                                   pt, pl)
                    loaded = ng
            else:
                src, at = x[n].reshape(x.shape[1] * plane), c0 * plane
            out = y[n, o].reshape(ho * wo)
            for pair in range(0, ho, 2):
                i = min(pair, ho - 2)
                for j in starts:
                    _two_rows(src, at + i * wp + j, w[o], out, i * wo + j, wp, wo, plane, offsets)


def forward(x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``y: (N, Cout, Ho, Wo)`` from ``x: (N, C, H, W)`` and ``weight: (Cout, C/G, kh, kw)``;
    ``geom`` must satisfy :func:`applies`."""
    wide = _widened(geom)
    if wide is not geom:
        ho, wo = geom.out_size
        return np.ascontiguousarray(forward(x, weight, wide)[:, :, :ho, :wo])
    y = np.empty(geom.output_shape, geom.dtype)
    (pt, _, pl, _), (hp, wp) = geom.padding, geom.padded_size
    starts, offsets = row_cover(geom.out_size[1], lanes(geom.dtype))
    _forward(np.ascontiguousarray(x), np.ascontiguousarray(weight), y, pt, pl, hp, wp,
             geom.groups, starts, offsets, numba.get_num_threads())
    return y


def workspace_bytes(geom: ConvGeometry) -> int:
    """Per thread (at most one per job), a group's padded input planes; none without
    padding. For rows or columns too few, that of the widened layer and its output."""
    wide = _widened(geom)
    if wide is not geom:
        return workspace_bytes(wide) + math.prod(wide.output_shape) * geom.dtype.itemsize
    if not any(geom.padding):
        return 0
    runs = min(numba.get_num_threads(), geom.batch * geom.out_channels)
    hp, wp = geom.padded_size
    return runs * geom.weight_shape[1] * hp * wp * geom.dtype.itemsize


def _widened(geom: ConvGeometry) -> ConvGeometry:
    """``geom`` with zero padding added at the bottom and right up to two output rows and a
    vector of output columns (``geom`` itself if it has them)."""
    (ho, wo), (top, bottom, left, right) = geom.out_size, geom.padding
    more_rows, more_columns = max(2 - ho, 0), max(lanes(geom.dtype) - wo, 0)
    if not more_rows and not more_columns:
        return geom
    return dataclasses.replace(geom, padding=(top, bottom + more_rows, left,
                                              right + more_columns))
