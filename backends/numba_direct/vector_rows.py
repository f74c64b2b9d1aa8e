"""Forward pass without dilation, two output rows at a time, their sums in registers.

A block is two output rows by ``V`` vectors of columns (:mod:`._vectors`). Output rows
``i`` and ``i + 1`` read padded rows ``sh*i + r``: the upper one with kernel row ``r``
(``r < kh``), the lower one with kernel row ``r - sh`` (``sh <= r < kh + sh``). For each
input channel of the group and each of those rows, each tap column loads the row's ``V``
vectors once and adds them, times the taps, to one or both rows: at stride 1 two
multiply-adds per load but for the first and last row. No accumulator lives in memory, and
each output is written once, straight into ``y``.

Each thread copies a group's input planes into its own zero-framed scratch when the
``(image, group)`` of its jobs changes, each padded row split into its ``sw`` column phases
(``Wq = ceil(Wp / sw)`` columns each), so that the columns a tap reads at column stride
``sw`` are contiguous: tap ``b`` reads phase ``b % sw`` from column ``j + b // sw``. At
stride 1 without padding it reads the input itself.

:func:`row_cover` places the vectors: whole blocks of up to ``_MOST_VECTORS`` along a row,
a last block or vector moved back inside the row, and a last odd output row done with the
row above it. The columns and rows covered twice are computed twice, to the same values.
Output rows narrower than a vector, or a single output row, are computed as the layer with
more zero padding at the right or bottom (:func:`_widened`), and cut back.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends.numba_direct._helpers import _chunk, _jit, _output_job
from convkit_backends.numba_direct._runtime import jit
from convkit_backends.numba_direct._vectors import fma_row, lanes, store_row, zero_row

# Vectors per block: 2 rows of 7 take 14 of AVX-512's 32 registers, and cover a row of 56
# float32 columns (ConvNeXt's first stage) without overlap.
_MOST_VECTORS = 7


def applies(geom: ConvGeometry) -> bool:
    """Whether :func:`forward` can run ``geom``: no dilation."""
    return geom.dilation == (1, 1)


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
def _one_row(src, at: int, taps, acc, offsets, kw: int, sw: int, wq: int):
    """``acc`` plus tap ``b`` of ``taps: (kw,)`` times the vectors of its column phase."""
    for b in range(kw):
        acc = fma_row(acc, taps[b], src, at + (b % sw) * wq + b // sw, offsets)
    return acc


@jit(inline="always")
def _both_rows(src, at: int, upper_taps, lower_taps, upper, lower, offsets, kw: int, sw: int,
               wq: int):
    """:func:`_one_row` into ``upper`` and ``lower`` from one input row (its loads shared)."""
    for b in range(kw):
        col = at + (b % sw) * wq + b // sw
        upper = fma_row(upper, upper_taps[b], src, col, offsets)
        lower = fma_row(lower, lower_taps[b], src, col, offsets)
    return upper, lower


@jit(inline="always")
def _sum_two_rows(src, at: int, w, y, q: int, row_len: int, wo: int, plane: int, offsets,
                  kw: int, sh: int, sw: int, wq: int):
    """Output rows ``y[q:]`` and ``y[q + wo:]`` at ``offsets``, from the flat input planes
    of ``src`` (``plane`` apart, padded rows ``row_len`` apart, column phases ``wq`` apart)
    whose first row and column are at ``at``; ``w: (Cg, kh, kw)``, strides ``sh, sw``."""
    kh = w.shape[1]
    upper = zero_row(y, offsets)
    lower = zero_row(y, offsets)
    for c in range(w.shape[0]):
        k, first = w[c], at + c * plane
        for r in range(min(sh, kh)):
            upper = _one_row(src, first + r * row_len, k[r], upper, offsets, kw, sw, wq)
        for r in range(sh, kh):
            upper, lower = _both_rows(src, first + r * row_len, k[r], k[r - sh], upper, lower,
                                      offsets, kw, sw, wq)
        for r in range(max(kh, sh), kh + sh):
            lower = _one_row(src, first + r * row_len, k[r - sh], lower, offsets, kw, sw, wq)
    store_row(y, q, offsets, upper)
    store_row(y, q + wo, offsets, lower)


@jit(nogil=True)
def _two_rows(src, at: int, w, y, q: int, row_len: int, wo: int, plane: int, offsets, sh: int,
              sw: int, wq: int):
    """:func:`_sum_two_rows`, with the column stride a constant where it is 1 or 2 (no
    division per tap) and, at stride 1, the tap count where it is 7, so that LLVM unrolls
    the tap loops (8x96x56x56 depthwise 7x7: 1.66-1.77 against 1.9-2.0 ms)."""
    kw = w.shape[2]
    if sw == 1:
        if kw == 7:
            _sum_two_rows(src, at, w, y, q, row_len, wo, plane, offsets, 7, sh, 1, wq)
        else:
            _sum_two_rows(src, at, w, y, q, row_len, wo, plane, offsets, kw, sh, 1, wq)
    elif sw == 2:
        _sum_two_rows(src, at, w, y, q, row_len, wo, plane, offsets, kw, sh, 2, wq)
    else:
        _sum_two_rows(src, at, w, y, q, row_len, wo, plane, offsets, kw, sh, sw, wq)


@jit(inline="always")
def _copy_phases(dst, src, top: int, left: int, sw: int, wq: int):
    """``src: (H, W)`` into the flat ``dst`` of padded rows ``sw * wq`` long, split by column
    phase: padded column ``c = left + j`` of row ``top + i`` at ``(c % sw) * wq + c // sw``."""
    h, wd = src.shape
    for i in range(h):
        row = dst[(top + i) * sw * wq:]
        for p in range(sw):
            j0 = (p - left) % sw
            part, source = row[p * wq + (left + j0) // sw:], src[i, j0:]
            for t in range((wd - j0 + sw - 1) // sw):
                part[t] = source[t * sw]


@jit(nogil=True)
def _copy_planes(dst, x, n: int, c0: int, cg: int, plane: int, top: int, left: int, sw: int,
                 wq: int):
    """Input planes ``c0 .. c0 + cg - 1`` of image ``n`` into ``dst``, ``plane`` apart
    (:func:`_copy_phases`), with a column stride of 1 or 2 as a constant: no division per
    element (the planes of 8x240x28x28 at stride 2, one thread: 1.07 against 1.21 ms)."""
    for c in range(cg):
        planes = dst[c * plane:(c + 1) * plane]
        if sw == 1:
            _copy_phases(planes, x[n, c0 + c], top, left, 1, wq)
        elif sw == 2:
            _copy_phases(planes, x[n, c0 + c], top, left, 2, wq)
        else:
            _copy_phases(planes, x[n, c0 + c], top, left, sw, wq)


@_jit
def _forward(x, w, y, pt, pl, hp, sh, sw, wq, copied, groups, starts, offsets, threads):
    """Jobs ``(image, output channel)`` cut into one run per thread (see the module); the
    planes' layout (``wq``, ``copied``) as :func:`_planes` gives it."""
    n_img = x.shape[0]
    c_out, cg = w.shape[:2]
    ho, wo = y.shape[2], y.shape[3]
    cog = c_out // groups
    row_len = sw * wq
    plane = hp * row_len
    jobs = n_img * c_out
    chunks = min(threads, jobs)
    planes = np.zeros((chunks, cg * plane if copied else 0), y.dtype)
    for t in numba.prange(chunks):
        loaded = -1
        lo, hi = _chunk(t, chunks, jobs)
        for job in range(lo, hi):
            n, o, c0 = _output_job(job, c_out, cg, groups)
            ng = n * groups + o // cog
            if copied:
                src, at = planes[t], 0
                if ng != loaded:
                    _copy_planes(src, x, n, c0, cg, plane, pt, pl, sw, wq)
                    loaded = ng
            else:
                src, at = x[n].reshape(x.shape[1] * plane), c0 * plane
            out = y[n, o].reshape(ho * wo)
            for pair in range(0, ho, 2):
                i = min(pair, ho - 2)
                for j in starts:
                    _two_rows(src, at + i * sh * row_len + j, w[o], out, i * wo + j, row_len, wo,
                              plane, offsets, sh, sw, wq)


def forward(x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``y: (N, Cout, Ho, Wo)`` from ``x: (N, C, H, W)`` and ``weight: (Cout, C/G, kh, kw)``;
    ``geom`` must satisfy :func:`applies`."""
    wide = _widened(geom)
    if wide is not geom:
        ho, wo = geom.out_size
        return np.ascontiguousarray(forward(x, weight, wide)[:, :, :ho, :wo])
    y = np.empty(geom.output_shape, geom.dtype)
    (pt, _, pl, _), hp = geom.padding, geom.padded_size[0]
    starts, offsets = row_cover(geom.out_size[1], lanes(geom.dtype))
    _forward(np.ascontiguousarray(x), np.ascontiguousarray(weight), y, pt, pl, hp,
             *geom.stride, *_planes(geom), geom.groups, starts, offsets,
             numba.get_num_threads())
    return y


def workspace_bytes(geom: ConvGeometry, method: str = "forward") -> int:
    """The forward pass's (the only ``method`` here): per thread (at most one per job), a
    group's padded input planes split by column phase (none at stride 1 without padding).
    For rows or columns too few, that of the widened layer and its output."""
    wide = _widened(geom)
    if wide is not geom:
        return workspace_bytes(wide) + math.prod(wide.output_shape) * geom.dtype.itemsize
    wq, copied = _planes(geom)
    if not copied:
        return 0
    runs = min(numba.get_num_threads(), geom.batch * geom.out_channels)
    plane = geom.padded_size[0] * geom.stride[1] * wq
    return runs * geom.weight_shape[1] * plane * geom.dtype.itemsize


def _planes(geom: ConvGeometry) -> tuple[int, bool]:
    """The input planes' layout: ``wq``, the columns of each column phase of a padded row
    (``ceil(Wp / sw)``), and whether the planes are copied (padded, or split by column
    phase) rather than read in place."""
    wp, sw = geom.padded_size[1], geom.stride[1]
    return -(-wp // sw), any(geom.padding) or sw > 1


def _widened(geom: ConvGeometry) -> ConvGeometry:
    """``geom`` with zero padding added at the bottom and right up to two output rows and a
    vector of output columns (``geom`` itself if it has them)."""
    (ho, wo), (top, bottom, left, right) = geom.out_size, geom.padding
    more_rows, more_columns = max(2 - ho, 0), max(lanes(geom.dtype) - wo, 0)
    if not more_rows and not more_columns:
        return geom
    sh, sw = geom.stride
    return dataclasses.replace(geom, padding=(top, bottom + more_rows * sh, left,
                                              right + more_columns * sw))
