"""Winograd F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray 2015) for 3x3, stride-1 convolutions.

The output is cut into ``m x m`` tiles (``m`` = 2 or 4), each computed from an
``a x a`` input tile (``a = m + 2``) as ``Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`` summed over input
channels: the ``a²`` elementwise products over channels become ``a²`` GEMMs
``U[p] (K x C) @ V[p] (C x tiles)``, which is where the time goes and BLAS does them.
F(2,3) does 2.25x fewer multiplications than a direct sum, F(4,3) 4x.

Per call, for a layer in several blocks of tiles (below): the filter transform ``U = G g
Gᵀ`` once, output channels shared out over the worker threads (a numba kernel). No BLAS call
of the backend runs on more than one thread: OpenBLAS's threads may spin for up to 0.1 s
after a call, on the cores the workers need
(:func:`~convkit_backends.winograd.transforms.transform_filters`). The transformed filters
and each worker's blocks are kept between calls (per thread, up to :data:`KEPT_BYTES`;
``retained_bytes`` reports them): fresh ones page-fault, and keeping them took the
8x256x14x14 forward pass from 17-21 ms to 8 ms (in process). The tiles are processed in
blocks of whole tile rows (about :data:`BLOCK_BYTES` of transformed input, at least
:data:`MIN_BLOCK_TILES` tiles so that the GEMMs are not dominated by packing ``U``). Each
worker thread (``numba.get_num_threads()`` of them) takes the next block, transforms its
input tiles (a numba kernel), multiplies on one BLAS thread and transforms the products back
into the output (numba): the block stays in the worker's cache between the steps, the cores
never wait for each other, and numba's and BLAS's thread pools never fight (a two-thread
OpenBLAS GEMM next to a busy core was measured 10-50x slower than on one thread). The
workers share a layer that is one block (few tiles: batch 1, or 14x14 images at batch 8):
each step is split among them (by input channel; by block of output channels and tile
position; by output channel), and ``U`` is never whole: each worker transforms a block's
filters at a tile position just before its GEMM. The three steps run in one numba kernel
that calls numpy's BLAS directly, where it can be found (:mod:`._shared`).

Input gradient: a forward pass over the output gradient with the flipped, transposed weight
(stride 1). Weight gradient: the same algorithm transposed, F(3x3, m x m)
(:mod:`.weight_grad`): per tile position one GEMM over the tiles, summed. Non-finite inputs
or weights: the transforms mix the values of a whole tile, so NaN and Inf would land where
a direct sum has none. A forward pass or input gradient checks its result (one pass):
a non-finite operand always leaves a non-finite value among the outputs its direct sum
reaches (each output of a tile reads all of its window's transformed values, and NaN or Inf
survives every product and sum, ``0 * Inf`` included, which BLAS libraries compute rather than
skip), and so does an overflow in the transforms; either way the call runs again on the
exact numba backend. Checking the result, not the operands, saves
summing the weight (2.4 MB at 256 channels: 0.1 ms of a 1.7 ms batch-1 forward pass). The
weight gradient checks its operands, which are smaller than its result at batch 1. Reductions
over fewer than :data:`MIN_CHANNELS` channels (for the weight gradient: fewer input or output
channels), and input gradients with padding beyond the kernel, run on the exact backend too.
Outputs whose window lies wholly in the padding are set to the exact 0.

Accuracy: the transforms lose bits, more for F(4,3) (its matrices hold 4, 5, 1/6 and
1/24); :attr:`WinogradBackend.capabilities` declares the factor on the direct-sum bound,
measured in ``docs/precision.md``. The transforms and their kernels are in
:mod:`convkit_backends.winograd.transforms`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numba
import numpy as np

from convkit.backend import Capabilities, ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends._blas import one_blas_thread
from convkit_backends._buffers import Buffers
from convkit_backends._cblas import gemm_address
from convkit_backends._common import (
    padding_within_kernel,
    reuse,
    transposed_geometry,
)
from convkit_backends._nonfinite import all_finite
from convkit_backends._workspace import remembered
from convkit_backends.numba_direct.backend import NumbaBackend
from convkit_backends.winograd._shared import shared_block, shared_filter_bytes
from convkit_backends.winograd._shared_weight_grad import (
    shared_weight_grad,
    shared_weight_grad_bytes,
)
from convkit_backends.winograd._workers import (
    Block,
    on_workers,
    quiet,
    share,
    share_blocks,
    workers_pool,
)
from convkit_backends.winograd.transforms import (
    F2,
    F4,
    VARIANTS,
    Variant,
    filter_matrix,
    input_scratch_size,
    transform_filters,
    transform_input,
    transform_output,
)
from convkit_backends.winograd.weight_grad import winograd_weight_grad

#: Fewer input channels than this (forward; output channels for the input gradient) run on
#: the exact path: few terms per output make Winograd's error large next to the direct-sum
#: bound at the image's edges (an output with one term computed from a whole tile), and the
#: GEMMs are too small to gain anything.
MIN_CHANNELS = 8

#: Bytes of one block's transformed input (its products take as much per output channel),
#: so that both fit in one core's 1 MiB L2 cache, unless that leaves fewer than
#: :data:`MIN_BLOCK_TILES` tiles: then the block grows to those and lives in the L3 cache.
BLOCK_BYTES = 256 * 2**10
#: Tiles per block at least, whatever its bytes: a GEMM over fewer columns than this
#: spends its time packing the filters (256 channels at 14x14 in 4-tile blocks: 2x slower
#: than in 192-tile blocks, which were as fast as or faster than 32 or 64 on the 64- and
#: 128-channel layers tried). With 64 or more channels this is what sizes the blocks.
MIN_BLOCK_TILES = 192


#: Bytes of work buffers (transformed filters, each worker's blocks) a backend instance keeps
#: between calls, per thread (``convkit_backends._buffers``): fresh ones page-fault.
KEPT_BYTES = 64 * 2**20

#: The per-call cost of one transformed filter element (computing ``U``, streaming it
#: through the GEMMs), in tile multiplications: it makes a layer with many channels and few
#: tiles take F(2,3), whose ``U`` is 2.25x smaller. Measured (in process, medians of 20):
#: batch 1 at 14x14 x 256 channels (16 tiles of F(4,3)), F(2,3) 4.1 ms against 5.7;
#: batch 8 at 7x7 x 512 channels (32 tiles), 15 against 28 ms, which 32 here had sent to
#: F(4,3); batch 8 at 14x14 x 256 channels (128 tiles) a tie, left to F(4,3).
FILTER_COST_TILES = 64


def choose_variant(geom: ConvGeometry, sums: int = 1) -> Variant:
    """The variant with the lower cost for ``geom``: ``a² * K * C * (tiles + 64 * sums)``:
    the GEMM multiplications over ``ceil(Ho/m) * ceil(Wo/m)`` tiles per image (F(4,3) wastes
    more on sizes not divisible by 4) plus ``sums`` arrays of ``U``'s size written and read
    back (:data:`FILTER_COST_TILES`): the forward pass's ``U`` (1), or the weight gradient's
    per-worker sums over tiles (one per worker).

    The weight gradient's sums cost like the forward's ``U`` each: on 2 workers (in process,
    medians of 30, F(2,3) against F(4,3), ms) 8x256x14x14 8.7 against 9.6 and 8x512x7x7 13.9
    against 17.2 take F(2,3); 8x128x28x28 (8.6 against 7.6), 8x64x56x56 and batch 1 at 56x56
    keep F(4,3); batch 1 at 28x28 was a tie (1.44 against 1.38), which goes to F(2,3).
    """
    ho, wo = geom.out_size

    def cost(v: Variant) -> int:
        tiles = geom.batch * math.ceil(ho / v.m) * math.ceil(wo / v.m)
        return v.a**2 * (tiles + FILTER_COST_TILES * sums)

    return min((F4, F2), key=cost)


@dataclass(frozen=True)
class _Plan:
    """How a forward call of ``geom`` is cut: ``th x tw`` tiles per image, ``rows`` tile rows
    in all, ``block_rows`` per block."""

    variant: Variant
    th: int
    tw: int
    rows: int
    block_rows: int

    @classmethod
    def make(cls, geom: ConvGeometry, variant: Variant) -> _Plan:
        ho, wo = geom.out_size
        th, tw = math.ceil(ho / variant.m), math.ceil(wo / variant.m)
        per_row = variant.a**2 * max(geom.in_channels, geom.out_channels) * tw
        block_rows = max(1, BLOCK_BYTES // (per_row * geom.dtype.itemsize),
                         math.ceil(MIN_BLOCK_TILES / tw))
        return cls(variant, th, tw, geom.batch * th, min(block_rows, geom.batch * th))

    def shared_by_workers(self) -> _Plan:
        """This plan with blocks of at most one worker's share of the tile rows, so that
        every worker gets a block (the weight gradient's plan)."""
        share = math.ceil(self.rows / numba.get_num_threads())
        return replace(self, block_rows=min(self.block_rows, share))

    def blocks(self) -> list[tuple[int, int]]:
        return [(r, min(r + self.block_rows, self.rows))
                for r in range(0, self.rows, self.block_rows)]

    def workers(self) -> int:
        return max(1, min(numba.get_num_threads(), math.ceil(self.rows / self.block_rows)))

    def worker_bytes(self, geom: ConvGeometry) -> int:
        """One worker's buffers: a block's ``V`` and ``M`` and the transforms' scratch."""
        a, tiles = self.variant.a, self.block_rows * self.tw
        scratch = (2 * input_scratch_size(self.variant, self.block_rows, self.tw)
                   + self.variant.m**2 * tiles)
        elements = a * a * (geom.in_channels + geom.out_channels) * tiles + scratch
        return elements * geom.dtype.itemsize


class _Scratch:
    """One worker's buffers for blocks of ``plan``, kept in its thread's ``buffers``:
    ``v``/``mm`` hold a block's transformed tiles and products, the rest is the transforms'
    scratch (see the kernels)."""

    def __init__(self, plan: _Plan, geom: ConvGeometry, buffers: Buffers):
        a, m, dtype = plan.variant.a, plan.variant.m, geom.dtype
        tiles = plan.block_rows * plan.tw
        self.v = buffers.empty("v", (a * a, geom.in_channels, tiles), dtype)
        self.mm = buffers.empty("mm", (a * a, geom.out_channels, tiles), dtype)
        scratch = input_scratch_size(plan.variant, plan.block_rows, plan.tw)
        self.columns = buffers.empty("columns", (scratch,), dtype)
        self.h = buffers.empty("h", (a * m, scratch // (a * m)), dtype)  # also a*m rows of T
        self.o = buffers.empty("o", (m * m, tiles), dtype)


def winograd_forward(
    x: np.ndarray, weight: np.ndarray, geom: ConvGeometry, variant: Variant,
    buffers: Buffers, transposed: bool = False,
) -> np.ndarray:
    """``y: (N, K, Ho, Wo)`` of a 3x3 stride-1 convolution (``x: (N, C, H, W)``,
    ``weight: (K, C, 3, 3)``) by Winograd ``variant``; ``buffers``: where the
    transformed filters and each thread's scratch are kept between calls. Outputs whose
    window lies wholly in the padding hold rounding residue (:func:`_zero_padding_only`).
    ``transposed``: ``weight`` is ``(C, K, 3, 3)`` and the convolution takes its transpose
    rotated by 180 degrees (an input gradient).

    Each worker takes whole blocks; when the layer is one block (few tiles), the workers
    share it instead (:func:`._shared.shared_block`).
    """
    plan = _Plan.make(geom, variant)
    y = np.empty(geom.output_shape, geom.dtype)
    pool = workers_pool()
    with one_blas_thread():
        if plan.workers() == 1 and numba.get_num_threads() > 1:
            shared_block(x, weight, y, geom.padding[::2], variant,
                         (plan.rows, plan.th, plan.tw), transposed, pool, buffers)
        else:
            if transposed:  # a view: the filter transform gathers each filter's taps
                weight = weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
            u = _transformed_filters(weight, variant, pool, buffers)
            _blocks_per_worker(x, u, y, geom, plan, pool, buffers)
    return y


def _transformed_filters(weight: np.ndarray, variant: Variant, pool: ThreadPoolExecutor,
                         buffers: Buffers) -> np.ndarray:
    """``U: (a*a, K, C)`` of ``weight: (K, C, 3, 3)``, into the kept buffer ``'U'``, output
    channels shared out over ``numba.get_num_threads()`` workers."""
    k, c = weight.shape[:2]
    u = buffers.empty("U", (variant.a**2, k, c), weight.dtype)
    g_g = filter_matrix(variant, weight.dtype)
    workers = min(numba.get_num_threads(), k)

    def work(i: int) -> None:
        outputs = share(k, i, workers)
        transform_filters(weight, g_g, u, outputs.start, outputs.stop,
                          buffers.empty("filter-taps", (9, c), weight.dtype))  # this thread's

    on_workers(work, workers, pool)
    return u


def _blocks_per_worker(x: np.ndarray, u: np.ndarray, y: np.ndarray, geom: ConvGeometry,
                       plan: _Plan, pool: ThreadPoolExecutor, buffers: Buffers) -> None:
    """Every worker takes the next block and runs all three steps on it."""
    a, dtype = plan.variant.a, geom.dtype
    pt, _, pl, _ = geom.padding
    c, k = geom.in_channels, geom.out_channels

    @quiet
    def work(take: Callable[[], Block | None]) -> None:
        buf = _Scratch(plan, geom, buffers)  # this thread's
        while (block := take()) is not None:
            row0, row1 = block
            count = (row1 - row0) * plan.tw
            v, mm = reuse(buf.v, (a * a, c, count), dtype), reuse(buf.mm, (a * a, k, count), dtype)
            transform_input(x, v, pt, pl, row0, row1, plan.th, plan.tw, 0, c, buf.columns,
                            buf.h)
            np.matmul(u, v, out=mm)
            transform_output(mm, y, row0, row1, plan.th, plan.tw, 0, k, buf.h, buf.o)

    share_blocks(work, plan.blocks(), pool, plan.workers())


def _zero_padding_only(y: np.ndarray, geom: ConvGeometry) -> None:
    """Set the outputs whose 3x3 window lies wholly in the padding (padding above 2) to the
    exact 0 a direct sum gives; Winograd leaves rounding residue of the tile's pixels there."""
    (pt, pb, pl, pr), (ho, wo) = geom.padding, geom.out_size
    y[:, :, :max(0, pt - 2)] = 0
    y[:, :, ho - max(0, pb - 2):] = 0
    y[:, :, :, :max(0, pl - 2)] = 0
    y[:, :, :, wo - max(0, pr - 2):] = 0


class WinogradBackend(ConvBackend):
    """Winograd F(2x2,3x3) / F(4x4,3x3): forward, input gradient and weight gradient.

    ``tile``: 2 or 4 to force F(2,3) or F(4,3); ``None`` (the default) picks the one with
    fewer multiplications per layer (:func:`choose_variant`).
    """

    description = "3x3 stride-1 layers with 8+ channels, in fewer multiplications (inexact)"
    capabilities = Capabilities(
        groups=False, dilation=False, stride=False, kernel_sizes=frozenset({(3, 3)}),
        error_factor=4.0,
    )

    def __init__(self, tile: int | None = None) -> None:
        if tile is not None and tile not in VARIANTS:
            raise ValueError(f"tile must be one of {sorted(VARIANTS)} or None, got {tile!r}")
        self.tile = tile
        self._exact = NumbaBackend()
        self._buffers = Buffers(limit=KEPT_BYTES)

    def variant(self, geom: ConvGeometry, method: str = "forward") -> Variant:
        """The variant this backend runs for a forward pass over ``geom`` (an input gradient
        is one over the transposed geometry), or for its weight gradient when ``method`` is
        ``'backward_weight'``: the weight gradient sums ``U``-sized arrays once per worker,
        unless the layer is one block of tiles, whose weight gradient runs in one kernel and
        sums once (batch 1, 28x28 x 128 channels, in process: F(4,3) 1.36 ms, F(2,3) 1.63;
        8x256x14x14: 8.85 against 9.39)."""
        if self.tile is not None:
            return VARIANTS[self.tile]
        variant = choose_variant(geom)
        if method == "backward_weight" and not self._weight_grad_in_one_kernel(geom, variant):
            return choose_variant(geom, sums=numba.get_num_threads())
        return variant

    @staticmethod
    def _weight_grad_in_one_kernel(geom: ConvGeometry, variant: Variant) -> bool:
        """Whether the weight gradient by ``variant`` runs in one kernel
        (:mod:`._shared_weight_grad`): the layer is one block, with workers to share it and
        a BLAS numba can call."""
        return (numba.get_num_threads() > 1 and _Plan.make(geom, variant).workers() == 1
                and gemm_address(geom.dtype) is not None)

    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        if geom.in_channels < MIN_CHANNELS:
            return self._exact.forward(x, weight, geom)
        y = winograd_forward(x, weight, geom, self.variant(geom), self._buffers)
        if not all_finite(y):  # a NaN/Inf operand, or an overflow: see the module's notes
            del y  # before the exact path allocates its own
            return self._exact.forward(x, weight, geom)
        _zero_padding_only(y, geom)
        return y

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        if geom.out_channels < MIN_CHANNELS or not padding_within_kernel(geom):
            return self._exact.backward_input(grad_output, weight, geom)
        # The flipped, transposed weight is never copied (a copy cost 0.47 of 2.09 ms at
        # batch 1, 14x14 x 256 channels): see winograd_forward.
        transposed = transposed_geometry(geom)
        grad_x = winograd_forward(grad_output, weight, transposed, self.variant(transposed),
                                  self._buffers, transposed=True)
        if not all_finite(grad_x):
            del grad_x
            return self._exact.backward_input(grad_output, weight, geom)
        _zero_padding_only(grad_x, transposed)
        return grad_x

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        if (min(geom.in_channels, geom.out_channels) < MIN_CHANNELS
                or not all_finite(x, grad_output)):
            return self._exact.backward_weight(x, grad_output, geom)
        variant = self.variant(geom, "backward_weight")
        plan = _Plan.make(geom, variant)
        in_one_kernel = self._weight_grad_in_one_kernel(geom, variant)
        blas = gemm_address(geom.dtype) if in_one_kernel else None
        with one_blas_thread():
            if blas is not None:
                return shared_weight_grad(x, grad_output, geom, variant,
                                          (plan.rows, plan.th, plan.tw), blas, self._buffers)
            blocks = plan.shared_by_workers().blocks()
            return winograd_weight_grad(x, grad_output, geom, variant, blocks,
                                        workers_pool(),
                                        min(numba.get_num_threads(), len(blocks)),
                                        self._buffers)

    def _weight_grad_bytes(self, geom: ConvGeometry) -> int:
        """The weight gradient's buffers: the zero-padded output gradient, and per worker a
        block's ``V``, output-gradient tiles and their transform, two ``(a*a, K, C)`` sums
        and the ``(K*C, 9)`` taps (see :mod:`.weight_grad`)."""
        variant = self.variant(geom, "backward_weight")
        plan = _Plan.make(geom, variant).shared_by_workers()
        a, m, (k, c) = variant.a, variant.m, (geom.out_channels, geom.in_channels)
        workers = numba.get_num_threads()
        tiles = plan.block_rows * plan.tw
        per_worker = ((a * a * (c + k) + m * m * k) * tiles + (2 * a * a + 9) * k * c
                      + 2 * input_scratch_size(variant, plan.block_rows, plan.tw))
        padded = geom.batch * k * plan.th * m * plan.tw * m
        in_blocks = (workers * per_worker + padded) * geom.dtype.itemsize
        # One block (the whole layer) may run in one kernel instead.
        return max(in_blocks, shared_weight_grad_bytes(geom, variant, plan.rows, plan.tw))

    def retained_bytes(self) -> int:
        """The work buffers kept between calls, in every thread (at most :data:`KEPT_BYTES`
        per thread)."""
        return self._buffers.kept_bytes()

    def release_retained(self) -> None:
        """Stop keeping the work buffers (see :meth:`retained_bytes`)."""
        self._buffers.release()

    @remembered(numba.get_num_threads)
    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        """The exact path's where that runs instead (few channels, padding beyond the
        kernel, non-finite operands of the weight gradient); else the Winograd path's, plus,
        for the forward pass and input gradient, the exact path's, which runs after it when
        the result is not finite (its buffers are kept meanwhile)."""
        exact = self._exact.workspace_bytes(geom, method)
        reduced = geom.out_channels if method == "backward_input" else geom.in_channels
        if method == "backward_weight":
            if min(geom.in_channels, geom.out_channels) < MIN_CHANNELS:
                return exact
            return max(exact, self._weight_grad_bytes(geom))
        if reduced < MIN_CHANNELS:
            return exact
        if method == "backward_input":
            if not padding_within_kernel(geom):
                return exact
            geom = transposed_geometry(geom)
        variant = self.variant(geom)
        plan = _Plan.make(geom, variant)
        threads, itemsize = numba.get_num_threads(), geom.dtype.itemsize
        # The whole U (blocks per worker), or each worker's block of filters (one shared
        # block).
        weights = max(variant.a**2 * geom.out_channels * geom.in_channels * itemsize,
                      shared_filter_bytes(geom.out_channels, geom.in_channels,
                                          plan.rows * plan.tw, variant.a, itemsize, threads))
        # Workers on blocks of their own, or sharing one (each with its scratch).
        return weights + threads * plan.worker_bytes(geom) + exact

