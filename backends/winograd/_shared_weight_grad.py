"""The weight gradient of a layer in one block of tiles, in one numba kernel.

:mod:`.weight_grad` deals blocks of tiles to the workers, each summing ``M[p] = GY[p] @
V[p]ᵀ`` over its blocks into a ``(a*a, K, C)`` array of its own, transformed back to taps
and added up. With one block (batch 1, 14x14 images at batch 8) the workers instead share
each step, as the forward pass does (:mod:`._shared`): transform the input (by input channel)
and the output gradient's tiles (by output channel); one GEMM per tile position over all the
tiles (by position), so ``M`` is summed once, not per worker; and the transform back to 3x3
taps (by filter), a vector loop where a GEMM ``(K*C, a*a) @ (a*a, 9)`` ran at a fifth of
the speed on its transposed operand. Every step is a ``prange`` loop of one kernel and the
GEMMs call numpy's BLAS directly (:mod:`convkit_backends._cblas`). The same operands and
number of threads give the same bits (BLAS may round a GEMM split among more threads
differently).
"""

from __future__ import annotations

import numba
import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._buffers import Buffers
from convkit_backends._cblas import Gemm, gemm, gemm_bt
from convkit_backends.numba_direct._helpers import _chunk
from convkit_backends.numba_direct._runtime import jit
from convkit_backends.numba_direct._threads import serialised_on_unsafe_layer
from convkit_backends.winograd.transforms import (
    Variant,
    filter_matrix,
    input_scratch_size,
    spread_matrix,
    transform_input,
)

#: Filters per pass of the transform back to taps: ``9 x`` this many sums stay in the L1
#: cache while the ``a*a`` rows of ``M`` stream past.
TAPS_CHUNK = 512


def shared_weight_grad(x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry,
                       variant: Variant, tiles: tuple[int, int, int], blas: Gemm,
                       buffers: Buffers) -> np.ndarray:
    """``(K, C, 3, 3)``: the weight gradient of ``x: (N, C, H, W)`` and ``grad_output:
    (N, K, Ho, Wo)`` (finite) by ``variant``, as one block of ``rows`` tile rows (``tiles =
    (rows, th, tw)``) on ``numba.get_num_threads()`` workers, GEMMs by ``blas``; ``buffers``:
    the calling thread's kept scratch. BLAS must be on one thread."""
    (rows, _, tw), a, m = tiles, variant.a, variant.m
    k, c = geom.out_channels, geom.in_channels
    workers, count, dtype = numba.get_num_threads(), rows * tw, geom.dtype
    scratch = input_scratch_size(variant, rows, tw)
    pt, _, pl, _ = geom.padding
    result = np.empty((k, c, 3, 3), dtype)
    _in_one_kernel(
        x, grad_output, result, pt, pl, *tiles, m,
        buffers.empty("wgrad:v-shared", (a * a, c, count), dtype),
        buffers.empty("wgrad:tiles-shared", (m * m, k * count), dtype),
        buffers.empty("wgrad:gy-shared", (a * a, k * count), dtype),
        buffers.empty("wgrad:m-shared", (a * a, k, c), dtype),
        spread_matrix(variant, dtype), filter_matrix(variant, dtype),
        buffers.empty("wgrad:columns-shared", (workers, scratch), dtype),
        buffers.empty("wgrad:h-shared", (workers, scratch), dtype),
        buffers.empty("wgrad:taps-shared", (workers, 9, TAPS_CHUNK), dtype),
        min(workers, a * a), *blas)
    return result


def shared_weight_grad_bytes(geom: ConvGeometry, variant: Variant, rows: int, tw: int) -> int:
    """The buffers of :func:`shared_weight_grad` and its result, in bytes."""
    a, m, (k, c), count = variant.a, variant.m, (geom.out_channels, geom.in_channels), rows * tw
    per_worker = 2 * input_scratch_size(variant, rows, tw) + 9 * TAPS_CHUNK
    elements = (a * a * (c + k) + m * m * k) * count + (a * a + 9) * k * c
    return (elements + numba.get_num_threads() * per_worker) * geom.dtype.itemsize


@jit(nogil=True, parallel=True)
def _weight_grad_kernel(x, gy, result, pt, pl, rows, th, tw, m, v, tiles, gy_t, mm, spread,
                        g_g, columns, h, taps, parts, address, index_bits):
    """The steps, each a loop over the workers: ``v: (a*a, C, T)`` (:func:`transform_input`)
    and ``gy_t = spread @ tiles`` (``tiles: (m*m, K*T)``, the output gradient's tiles), by
    channel; ``mm[p] = gy_t[p] @ v[p]ᵀ`` per tile position (``parts`` workers); ``result``
    from ``mm`` and ``g_g`` (:func:`filter_matrix`), by filter."""
    workers, c, k = columns.shape[0], x.shape[1], gy.shape[1]
    a2, count = v.shape[0], rows * tw
    for i in numba.prange(workers):
        transform_input(x, v, pt, pl, 0, rows, th, tw, *_chunk(i, workers, c), columns[i],
                        h[i])
        k0, k1 = _chunk(i, workers, k)
        _output_grad_tiles(gy, tiles, m, th, tw, rows, k0, k1)
        gemm(address, index_bits, spread, tiles[:, k0 * count:k1 * count],
             gy_t[:, k0 * count:k1 * count])
    for i in numba.prange(parts):
        for p in range(*_chunk(i, parts, a2)):
            gemm_bt(address, index_bits, gy_t[p].reshape(k, count), v[p], mm[p])
    filters = k * c
    flat_m, flat_result = mm.reshape(a2, filters), result.reshape(filters, 9)
    for i in numba.prange(workers):
        _to_taps(flat_m, g_g, flat_result, taps[i], *_chunk(i, workers, filters))


@jit(nogil=True)
def _output_grad_tiles(gy, tiles, m, th, tw, rows, k0, k1):
    """``tiles[i*m + j, k*T + r*tw + tx] = gy[n, k, ty*m + i, tx*m + j]`` (0 past the image)
    for output channels ``k`` in ``[k0, k1)``, tile rows ``r`` (image ``r // th``, row ``ty =
    r % th``), ``T = rows * tw``."""
    ho, wo = gy.shape[2], gy.shape[3]
    count = rows * tw
    for k in range(k0, k1):
        for r in range(rows):
            n, ty = r // th, r % th
            for i in range(m):
                for j in range(m):
                    dst = tiles[i * m + j, k * count + r * tw:]
                    if ty * m + i < ho:
                        src = gy[n, k, ty * m + i]
                        for tx in range(tw):
                            col = tx * m + j
                            dst[tx] = src[col] if col < wo else 0
                    else:
                        for tx in range(tw):
                            dst[tx] = 0


@jit(nogil=True)
def _to_taps(flat_m, g_g, flat_result, sums, f0, f1):
    """``flat_result[f, t] = sum_p g_g[p, t] * flat_m[p, f]`` for filters ``f`` in ``[f0,
    f1)`` (``Gᵀ M G`` per filter), :data:`TAPS_CHUNK` filters at a time in ``sums: (9,
    TAPS_CHUNK)``, zero coefficients skipped."""
    a2, chunk = g_g.shape[0], sums.shape[1]
    for start in range(f0, f1, chunk):
        size = min(chunk, f1 - start)
        sums[:, :size] = 0
        for p in range(a2):
            row = flat_m[p, start:start + size]
            for t in range(9):
                weight = g_g[p, t]
                if weight != 0:
                    out = sums[t]
                    for e in range(size):
                        out[e] += weight * row[e]
        for e in range(size):
            for t in range(9):
                flat_result[start + e, t] = sums[t, e]


#: One launch at a time where numba's threading layer needs that.
_in_one_kernel = serialised_on_unsafe_layer(_weight_grad_kernel)
