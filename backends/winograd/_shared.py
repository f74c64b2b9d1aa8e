"""A layer in one block of tiles, shared by the workers in one numba kernel.

Layers with few tiles (batch 1, or 14x14 images at batch 8) make one block, and every step
of it is shared out: the input transform by input channel, the GEMMs by (block of output
channels, tile position), the output transform by output channel. Here the three steps are
three ``prange`` loops of one kernel, and the GEMMs call numpy's BLAS directly
(:mod:`convkit_backends._cblas`): numba's threads spin briefly between the loops, where
Python threads handing the steps over slept and woke (50-100 us each on a virtual machine)
and took turns at the GIL. In process, against the Python threads: batch 1 at 56x56 x 64
channels 1.90-1.97 -> 1.13-1.21 ms, 28x28 x 128 1.83-2.15 -> 1.06-1.20 ms, 14x14 x 256
2.17-2.49 -> 1.63-1.80 ms, the same bits.

``U`` is never whole. The GEMM step's work is a list of (block of output channels, tile
position) pairs, cut into one run per worker; a worker transforms the filters of its pair
(:func:`~.transforms.filters_at`) just before the GEMM, from the weight regrouped by tap.
Where the weight outweighs the transformed tiles (``9 K > a² T``: 14x14 x 256 channels at
batch 1) it is cut into blocks of output channels whose taps fit in L2
(:func:`output_block`), each regrouped by the worker that takes it (an input gradient's
weight is transposed: its blocks are blocks of columns). Transformed per position from the
whole weight by tap, the filters were read from L3 (1 to 9 taps per position: 64 reads of
256 KB at 256 channels). In process, old and new alternating, that layer's forward pass
took 1.37-1.44 -> 1.24-1.30 ms (blocks of 32 and 64 channels alike, of 16 and 128 slower),
its input gradient 1.17-1.19 -> 1.09-1.10 ms. Elsewhere the layer is one block, its weight
regrouped whole by all workers before the GEMMs: where the tiles outweigh the weight,
repacking them for every block cost more than it saved (8x256x14x14: 5.3-5.5 -> 5.9-6.2
ms).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba
import numpy as np

from convkit_backends._buffers import Buffers
from convkit_backends._cblas import gemm, gemm_address, gemm_at
from convkit_backends.numba_direct._helpers import _chunk
from convkit_backends.numba_direct._runtime import jit
from convkit_backends.numba_direct._threads import serialised_on_unsafe_layer
from convkit_backends.winograd._workers import on_workers, quiet, share
from convkit_backends.winograd.transforms import (
    Variant,
    filter_matrix,
    filters_at,
    input_scratch_size,
    transform_input,
    transform_output,
)

#: Bytes of a block's weight by tap: about a third of a Zen 4 core's 1 MiB L2, leaving room
#: for BLAS's packed panels.
BLOCK_TAPS_BYTES = 384 * 1024


def output_block(k: int, c: int, tiles: int, a: int, itemsize: int, workers: int) -> int:
    """Output channels per block of the GEMM step (see the module): all ``k`` where the
    ``a*a x C x tiles`` transformed tiles outweigh the weight's ``9 x K x C`` taps; else as
    many as keep a block's taps (``9 * block * C`` elements of ``itemsize`` bytes) within
    :data:`BLOCK_TAPS_BYTES`, a multiple of 16 (BLAS's row panels) where that is more than
    16, and no more than each of ``workers`` gets of ``k``."""
    if 9 * k <= a * a * tiles:
        return k
    fit = max(1, BLOCK_TAPS_BYTES // (9 * c * itemsize))
    if fit > 16:
        fit -= fit % 16
    return min(fit, math.ceil(k / workers))


def shared_filter_bytes(k: int, c: int, tiles: int, a: int, itemsize: int,
                        workers: int) -> int:
    """The weight by tap and the GEMM workers' filters at a tile position, in bytes
    (:func:`_filter_buffers`)."""
    shapes = _filter_buffers(k, c, tiles, a, itemsize, workers)
    return (math.prod(shapes.taps) + math.prod(shapes.u)) * itemsize


class _FilterBuffers(NamedTuple):
    """``block`` (:func:`output_block`) and the shapes of the weight by tap (one row where
    the weight is one block, else one per GEMM worker) and of the GEMM workers' filters."""

    block: int
    taps: tuple[int, int]
    u: tuple[int, int]


def _filter_buffers(k: int, c: int, tiles: int, a: int, itemsize: int,
                    workers: int) -> _FilterBuffers:
    """The GEMM step runs on at most one worker per (block, tile position)."""
    block = output_block(k, c, tiles, a, itemsize, workers)
    parts = min(workers, math.ceil(k / block) * a * a)
    return _FilterBuffers(block, (1 if block == k else parts, 9 * block * c),
                          (parts, block * c))


def shared_block(x: np.ndarray, weight: np.ndarray, y: np.ndarray, pads: tuple[int, int],
                 variant: Variant, tiles: tuple[int, int, int], transposed: bool,
                 pool: ThreadPoolExecutor, buffers: Buffers) -> None:
    """``y: (N, K, Ho, Wo)`` from ``x: (N, C, H, W)`` and ``weight: (K, C, 3, 3)`` as one
    block of ``rows`` tile rows (``tiles = (rows, th, tw)``, padding ``pads = (top, left)``)
    on ``numba.get_num_threads()`` workers; ``buffers``: the calling thread's kept scratch.
    BLAS must be on one thread. In one kernel where numpy's BLAS has a GEMM numba can call,
    else on the Python threads of ``pool`` (:func:`_on_python_threads`).

    ``transposed``: ``weight`` is ``(C, K, 3, 3)`` and the convolution takes its transpose
    rotated by 180 degrees (an input gradient). Its filters are then transformed as they lie,
    with the taps of :func:`filter_matrix` reversed, and each GEMM takes them transposed:
    regrouping the taps of a transposed view cost twice as much (0.27 against 0.13 ms per
    worker at 256 channels). A block of output channels is then a block of its columns.
    """
    (rows, _, tw), a, m = tiles, variant.a, variant.m
    k, c = y.shape[1], x.shape[1]
    workers, count, dtype = numba.get_num_threads(), rows * tw, y.dtype
    scratch = input_scratch_size(variant, rows, tw)
    shapes = _filter_buffers(k, c, count, a, dtype.itemsize, workers)
    work = _Work(
        buffers.empty("v-shared", (a * a, c, count), dtype),
        buffers.empty("mm-shared", (a * a, k, count), dtype),
        filter_matrix(variant, dtype, flipped=transposed),
        shapes.block,
        buffers.empty("taps-shared", shapes.taps, dtype),
        buffers.empty("u-shared", shapes.u, dtype),
        buffers.empty("columns-shared", (workers, scratch), dtype),
        buffers.empty("h-shared", (workers, a * m, scratch // (a * m)), dtype),
        buffers.empty("o-shared", (workers, m * m, count), dtype))
    blas = gemm_address(dtype)
    if blas is None:
        _on_python_threads(x, weight, y, pads, tiles, transposed, work, pool)
    else:
        _in_one_kernel(x, weight, y, *pads, *tiles, transposed, *work, workers, *blas)


class _Work(NamedTuple):
    """The block's buffers: ``v: (a*a, C, T)`` and ``mm: (a*a, K, T)`` (transformed tiles,
    products), ``g_g`` (:func:`filter_matrix`), ``block`` (:func:`output_block`), the weight
    by tap ``taps`` (one row: all of it, ``(9, K, C)``, or ``(9, C, K)`` transposed; else a
    row per worker of the GEMM step: its block's), ``u[i]`` (a GEMM worker's filters at one
    tile position, as a block of the weight), and per worker the transforms' scratch
    ``columns[i]``, ``h[i]``, ``o[i]``."""

    v: np.ndarray
    mm: np.ndarray
    g_g: np.ndarray
    block: int
    taps: np.ndarray
    u: np.ndarray
    columns: np.ndarray
    h: np.ndarray
    o: np.ndarray


def _on_python_threads(x: np.ndarray, weight: np.ndarray, y: np.ndarray,
                       pads: tuple[int, int], tiles: tuple[int, int, int], transposed: bool,
                       work: _Work, pool: ThreadPoolExecutor) -> None:
    """:func:`_in_one_kernel`'s three steps on Python threads (``pool`` and this one), the
    GEMMs by ``np.matmul``."""
    (pt, pl), (rows, th, tw) = pads, tiles
    k, c, workers, a2 = y.shape[1], x.shape[1], work.columns.shape[0], work.v.shape[0]
    blocks, parts = math.ceil(k / work.block), len(work.u)
    f0, f1 = weight.shape[:2]

    def prepare(i: int) -> None:
        channels = share(c, i, workers)
        transform_input(x, work.v, pt, pl, 0, rows, th, tw, channels.start, channels.stop,
                        work.columns[i], work.h[i])
        if blocks == 1:
            part = share(f0, i, workers)
            _regroup(weight, part.start, part.stop, 0, f1, work.taps[0].reshape(9, f0, f1),
                     part.start)

    @quiet
    def multiply(i: int) -> None:
        current = -1
        for item in share(blocks * a2, i, parts):
            b, p = divmod(item, a2)
            k0, k1, r0, r1, c0, c1 = _block(b, blocks, work.block, k, f0, f1, transposed)
            size = (r1 - r0) * (c1 - c0)
            by_tap = work.taps[min(i, len(work.taps) - 1), :9 * size].reshape(9, r1 - r0,
                                                                              c1 - c0)
            if blocks > 1 and b != current:
                _regroup(weight, r0, r1, c0, c1, by_tap, 0)
                current = b
            u = work.u[i, :size].reshape(r1 - r0, c1 - c0)
            filters_at(by_tap, work.g_g, p, u)
            np.matmul(u.T if transposed else u, work.v[p], out=work.mm[p, k0:k1])

    def finish(i: int) -> None:
        outputs = share(k, i, workers)
        transform_output(work.mm, y, 0, rows, th, tw, outputs.start, outputs.stop, work.h[i],
                         work.o[i])

    on_workers(prepare, workers, pool)
    on_workers(multiply, parts, pool)
    on_workers(finish, workers, pool)


@jit(inline="always")
def _block(b: int, blocks: int, block: int, k: int, f0: int, f1: int, transposed: bool):
    """Block ``b`` of ``blocks``: its output channels ``[k0, k1)``, and its rows ``[r0, r1)``
    and columns ``[c0, c1)`` of the ``(f0, f1)`` weight (the whole weight if it is one block;
    else a block of rows, or of columns where ``transposed``)."""
    k0, k1 = b * block, min(k, (b + 1) * block)
    if blocks == 1:
        return k0, k1, 0, f0, 0, f1
    if transposed:
        return k0, k1, 0, f0, k0, k1
    return k0, k1, k0, k1, 0, f1


@jit(inline="always", nogil=True)  # nogil: the Python-thread path calls it too
def _regroup(weight, r0: int, r1: int, c0: int, c1: int, by_tap, row0: int):
    """``by_tap[l, row0 + r - r0] = weight[r, c0:c1, l // 3, l % 3]`` for rows ``r`` in
    ``[r0, r1)``, taps ``l < 9``."""
    for r in range(r1 - r0):
        for tap in range(9):
            by_tap[tap, row0 + r] = weight[r0 + r, c0:c1, tap // 3, tap % 3]


@jit(nogil=True, parallel=True)
def _shared_block_kernel(x, weight, y, pt, pl, rows, th, tw, transposed, v, mm, g_g, block,
                         taps, u, columns, h, o, workers, address, index_bits):
    """The block's three steps, each a loop over ``workers`` (numba's threads take them):
    input transform (and the whole weight by tap, where it is one block); filters and GEMM
    per (block of output channels, tile position), a block regrouped by tap by the worker that
    takes it; output transform. The buffers are :class:`_Work`'s; the GEMMs run by the
    CBLAS function at ``address`` (:func:`~convkit_backends._cblas.gemm`)."""
    a2, c, k = v.shape[0], x.shape[1], y.shape[1]
    f0, f1 = weight.shape[0], weight.shape[1]
    blocks, parts = (k + block - 1) // block, u.shape[0]
    for i in numba.prange(workers):
        transform_input(x, v, pt, pl, 0, rows, th, tw, *_chunk(i, workers, c), columns[i],
                        h[i])
        if blocks == 1:
            r0, r1 = _chunk(i, workers, f0)
            _regroup(weight, r0, r1, 0, f1, taps[0].reshape(9, f0, f1), r0)
    for i in numba.prange(parts):
        current = -1
        for item in range(*_chunk(i, parts, blocks * a2)):
            b, p = item // a2, item % a2
            k0, k1, r0, r1, c0, c1 = _block(b, blocks, block, k, f0, f1, transposed)
            size = (r1 - r0) * (c1 - c0)
            row = min(np.intp(i), taps.shape[0] - 1)  # (i is unsigned: with an int, a float)
            by_tap = taps[row, :9 * size].reshape(9, r1 - r0, c1 - c0)
            if blocks > 1 and b != current:
                _regroup(weight, r0, r1, c0, c1, by_tap, 0)
                current = b
            filters = u[i, :size].reshape(r1 - r0, c1 - c0)
            filters_at(by_tap, g_g, p, filters)
            if transposed:
                gemm_at(address, index_bits, filters, v[p], mm[p, k0:k1])
            else:
                gemm(address, index_bits, filters, v[p], mm[p, k0:k1])
    for i in numba.prange(workers):
        transform_output(mm, y, 0, rows, th, tw, *_chunk(i, workers, k), h[i], o[i])


#: One launch at a time where numba's threading layer needs that.
_in_one_kernel = serialised_on_unsafe_layer(_shared_block_kernel)
