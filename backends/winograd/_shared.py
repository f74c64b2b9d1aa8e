"""A layer in one block of tiles, shared by the workers in one numba kernel.

Layers with few tiles (batch 1, or 14x14 images at batch 8) make one block, and every step
of it is shared out: the input transform by input channel (with the weight's taps regrouped
by tap, by output channel), the GEMMs by tile position (each worker transforming the filters
of a position just before its GEMM, so ``U`` is never whole), the output transform by output
channel. Here the three steps are three ``prange`` loops of one kernel, and the GEMMs call
numpy's BLAS directly (:mod:`convkit_backends._cblas`): numba's threads spin briefly between
the loops, where Python threads handing the steps over slept and woke (50-100 us each on a
virtual machine) and took turns at the GIL. In process, against the Python threads: batch 1
at 56x56 x 64 channels 1.90-1.97 -> 1.13-1.21 ms, 28x28 x 128 1.83-2.15 -> 1.06-1.20 ms,
14x14 x 256 2.17-2.49 -> 1.63-1.80 ms, the same bits.
"""

from __future__ import annotations

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
    worker at 256 channels).
    """
    (rows, _, tw), a, m = tiles, variant.a, variant.m
    k, c = y.shape[1], x.shape[1]
    workers, count, dtype = numba.get_num_threads(), rows * tw, y.dtype
    scratch = input_scratch_size(variant, rows, tw)
    filters = weight.shape[:2]  # (K, C), or (C, K) transposed
    work = _Work(
        buffers.empty("v-shared", (a * a, c, count), dtype),
        buffers.empty("mm-shared", (a * a, k, count), dtype),
        buffers.empty("by-tap", (9, *filters), dtype),
        filter_matrix(variant, dtype, flipped=transposed),
        buffers.empty("u-shared", (min(workers, a * a), *filters), dtype),
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
    products), ``by_tap: (9, K, C)`` (the weight by tap; ``(9, C, K)`` transposed), ``g_g``
    (:func:`filter_matrix`), and per worker ``u[i]`` (the filters at one tile position, as
    ``by_tap[0]``; the GEMMs are shared by ``min(workers, a*a)`` workers) and the transforms'
    scratch ``columns[i]``, ``h[i]``, ``o[i]``."""

    v: np.ndarray
    mm: np.ndarray
    by_tap: np.ndarray
    g_g: np.ndarray
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
    k, c, workers = y.shape[1], x.shape[1], work.columns.shape[0]
    a2, filters = work.v.shape[0], weight.shape[0]

    def prepare(i: int) -> None:
        channels, part = share(c, i, workers), share(filters, i, workers)
        transform_input(x, work.v, pt, pl, 0, rows, th, tw, channels.start, channels.stop,
                        work.columns[i], work.h[i])
        np.copyto(work.by_tap.reshape(3, 3, *weight.shape[:2])[:, :, part.start:part.stop],
                  weight[part.start:part.stop].transpose(2, 3, 0, 1))

    @quiet
    def multiply(i: int) -> None:
        for p in share(a2, i, len(work.u)):
            filters_at(work.by_tap, work.g_g, p, work.u[i])
            np.matmul(work.u[i].T if transposed else work.u[i], work.v[p], out=work.mm[p])

    def finish(i: int) -> None:
        outputs = share(k, i, workers)
        transform_output(work.mm, y, 0, rows, th, tw, outputs.start, outputs.stop, work.h[i],
                         work.o[i])

    on_workers(prepare, workers, pool)
    on_workers(multiply, len(work.u), pool)
    on_workers(finish, workers, pool)


@jit(nogil=True, parallel=True)
def _shared_block_kernel(x, weight, y, pt, pl, rows, th, tw, transposed, v, mm, by_tap, g_g, u,
                         columns, h, o, workers, address, index_bits):
    """The block's three steps, each a loop over ``workers`` (numba's threads take them):
    input transform and weight by tap; filters and GEMM per tile position; output transform.
    The buffers are :class:`_Work`'s; the GEMMs run by the CBLAS function at ``address``
    (:func:`~convkit_backends._cblas.gemm`)."""
    a2, c, k, filters = v.shape[0], x.shape[1], y.shape[1], weight.shape[0]
    for i in numba.prange(workers):
        transform_input(x, v, pt, pl, 0, rows, th, tw, *_chunk(i, workers, c), columns[i],
                        h[i])
        for f in range(*_chunk(i, workers, filters)):
            for tap in range(9):
                by_tap[tap, f] = weight[f, :, tap // 3, tap % 3]
    parts = u.shape[0]  # tile positions are shared by min(workers, a*a) of them
    for i in numba.prange(parts):
        for p in range(*_chunk(i, parts, a2)):
            filters_at(by_tap, g_g, p, u[i])
            if transposed:
                gemm_at(address, index_bits, u[i], v[p], mm[p])
            else:
                gemm(address, index_bits, u[i], v[p], mm[p])
    for i in numba.prange(workers):
        transform_output(mm, y, 0, rows, th, tw, *_chunk(i, workers, k), h[i], o[i])


#: One launch at a time where numba's threading layer needs that.
_in_one_kernel = serialised_on_unsafe_layer(_shared_block_kernel)
