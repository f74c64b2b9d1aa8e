"""Winograd's weight gradient of a 3x3 stride-1 layer: the forward algorithm transposed.

The forward F(m, 3) computes ``y = Aᵀ[(G g) ⊙ (Bᵀ d)]``. For any ``gy``,
``gy · y = g · Gᵀ[(A gy) ⊙ (Bᵀ d)]``, so the correlation of an input tile ``d`` with an
output-gradient tile ``gy`` (the weight gradient's sum over one tile) is
``Gᵀ[(A gy) ⊙ (Bᵀ d)]``: F(3, m) with the same matrices, in 2-D
``Gᵀ [(A gy Aᵀ) ⊙ (Bᵀ d B)] G``. The sum over every tile of every image moves inside: per
tile position ``p`` one GEMM ``GY[p] (K x T) @ V[p]ᵀ (T x C)`` summed over blocks of tiles,
and the transform back to 3x3 taps runs once per thread, on its sum (one GEMM with
``kron(G, G)``).

``V`` is the forward pass's input transform (:func:`transform_input`); ``GY`` is one GEMM
with ``kron(A, A)`` over the output gradient's ``m x m`` tiles. Blocks of tile rows are
dealt out to the worker threads by index, each summing into its own ``M``, and their taps
are added up in worker order: the result is the same from call to call (dealt out as the
threads came free, it varied in the last bits). A layer in one block of tiles runs in one
kernel instead, where numpy's BLAS can be called from numba (:mod:`._shared_weight_grad`).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._buffers import Buffers
from convkit_backends.winograd._workers import Block, on_workers
from convkit_backends.winograd.transforms import (
    Variant,
    filter_matrix,
    input_scratch_size,
    spread_matrix,
    transform_input,
)


def winograd_weight_grad(
    x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry, variant: Variant,
    blocks: list[Block], pool: ThreadPoolExecutor, workers: int, buffers: Buffers,
) -> np.ndarray:
    """``(K, C, 3, 3)``: the weight gradient of ``x: (N, C, H, W)`` and ``grad_output:
    (N, K, Ho, Wo)`` (finite) by ``variant``, over ``blocks`` of tile rows (``[r0, r1)`` of
    the ``N * ceil(Ho/m)`` rows of ``m x m`` output tiles), worker ``i`` of ``workers``
    threads of ``pool`` taking blocks ``i, i + workers, ...`` (BLAS on one thread: the
    caller's business). ``buffers``: each thread's scratch, kept between calls. The same
    operands and worker count give the same bits."""
    a, m, dtype = variant.a, variant.m, geom.dtype
    k, c = geom.out_channels, geom.in_channels
    th, tw = math.ceil(geom.out_size[0] / m), math.ceil(geom.out_size[1] / m)
    tiles = _output_tiles(grad_output, th * m, tw * m, m, buffers)  # (m, m, K, N, th, tw)
    spread = spread_matrix(variant, dtype)  # A ⊗ A: (a*a, m*m)
    g_g = filter_matrix(variant, dtype)  # G ⊗ G: (a*a, 9)
    # Worker i's taps go to outs[i]: the result, or the calling thread's kept buffer (no
    # other call can reuse that while this one runs). Summed in worker order, with blocks
    # dealt out by worker index, the result does not depend on which thread ran first.
    result = np.empty((k * c, 9), dtype)
    outs = [result, *buffers.empty("wgrad:parts", (workers - 1, k * c, 9), dtype)]

    def work(i: int) -> None:  # buffers hands out this thread's own
        total = buffers.empty("wgrad:sum", (a * a, k, c), dtype)
        first = True
        for r0, r1 in blocks[i::workers]:
            count = (r1 - r0) * tw
            scratch = input_scratch_size(variant, r1 - r0, tw)
            v = buffers.empty("wgrad:v", (a * a, c, count), dtype)
            transform_input(x, v, *_top_left(geom), r0, r1, th, tw, 0, c,
                            buffers.empty("wgrad:columns", (scratch,), dtype),
                            buffers.empty("wgrad:h", (scratch,), dtype))
            flat = buffers.empty("wgrad:tiles", (m * m, k, r1 - r0, tw), dtype)
            _copy_tile_rows(tiles, flat.reshape(m, m, k, r1 - r0, tw), r0, r1)
            gy = buffers.empty("wgrad:gy", (a * a, k, count), dtype)
            np.matmul(spread, flat.reshape(m * m, -1), out=gy.reshape(a * a, -1))
            if first:
                np.matmul(gy, v.transpose(0, 2, 1), out=total)
                first = False
            else:
                part = buffers.empty("wgrad:part", (a * a, k, c), dtype)
                np.matmul(gy, v.transpose(0, 2, 1), out=part)
                total += part
        if first:
            outs[i][...] = 0
        else:  # back to taps: (K*C, 9) = total.T @ kron(G, G), each filter's 9 taps together
            np.matmul(total.reshape(a * a, k * c).T, g_g, out=outs[i])

    on_workers(work, workers, pool)
    for taps in outs[1:]:
        result += taps
    return result.reshape(k, c, 3, 3)


def _top_left(geom: ConvGeometry) -> tuple[int, int]:
    pt, _, pl, _ = geom.padding
    return pt, pl


def _output_tiles(
    grad_output: np.ndarray, height: int, width: int, m: int, buffers: Buffers
) -> np.ndarray:
    """``grad_output: (N, K, Ho, Wo)`` zero-padded to ``height x width`` (whole tiles), as a
    view ``(m, m, K, N, height/m, width/m)``: entry ``(i, j)`` of tile ``(ty, tx)``."""
    n, k, ho, wo = grad_output.shape
    if (ho, wo) != (height, width):
        padded = buffers.empty("wgrad:padded", (n, k, height, width), grad_output.dtype)
        padded[:, :, ho:] = 0
        padded[:, :, :ho, wo:] = 0
        padded[:, :, :ho, :wo] = grad_output
        grad_output = padded
    by_tile = grad_output.reshape(n, k, height // m, m, width // m, m)
    return by_tile.transpose(3, 5, 1, 0, 2, 4)


def _copy_tile_rows(tiles: np.ndarray, out: np.ndarray, r0: int, r1: int) -> None:
    """``out[..., r - r0, :] = `` tile row ``r`` (image ``r // th``, row ``r % th``) of
    ``tiles: (m, m, K, N, th, tw)``, for ``r`` in ``[r0, r1)``, image by image."""
    th = tiles.shape[4]
    r = r0
    while r < r1:
        n, ty = divmod(r, th)
        stop = min(r1, (n + 1) * th)
        out[:, :, :, r - r0:stop - r0] = tiles[:, :, :, n, ty:ty + stop - r]
        r = stop
