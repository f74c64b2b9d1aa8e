"""Winograd F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray 2015) for 3x3, stride-1 convolutions.

The output is cut into ``m x m`` tiles (``m`` = 2 or 4), each computed from an
``a x a`` input tile (``a = m + 2``) as ``Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`` summed over input
channels: the ``a²`` elementwise products over channels become ``a²`` GEMMs
``U[p] (K x C) @ V[p] (C x tiles)``, which is where the time goes and BLAS does them.
F(2,3) does 2.25x fewer multiplications than a direct sum, F(4,3) 4x.

Per call: the filter transform ``U = G g Gᵀ`` once (one small GEMM). The tiles are
processed in blocks of whole tile rows (about :data:`BLOCK_BYTES` of transformed input, at
least :data:`MIN_BLOCK_TILES` tiles so that the GEMMs are not dominated by packing ``U``).
Each worker thread (``numba.get_num_threads()`` of them) takes the next block, transforms
its input tiles (a numba kernel), multiplies on one BLAS thread and transforms the
products back into the output (numba): the block stays in the worker's cache between the
steps, the cores never wait for each other, and numba's and BLAS's thread pools never
fight (a two-thread OpenBLAS GEMM next to a busy core was measured 10-50x slower than on
one thread). A layer with fewer blocks than workers shares its one block: each step is
split among the workers (by input channel, tile position, output channel).

Input gradient: a forward pass over the output gradient with the flipped, transposed weight
(stride 1). Weight gradient: the exact numba kernels (:class:`NumbaBackend`); Winograd's
weight gradient would be inexact too and gains less. Non-finite inputs or weights: the
transforms mix the values of a whole tile, so NaN and Inf would land where a direct sum
has none; such calls run on the exact numba backend instead (one ``sum`` of each operand
detects them). So do reductions over fewer than :data:`MIN_CHANNELS` channels, and input
gradients with padding beyond the kernel. Outputs whose window lies wholly in the padding
are set to the exact 0.

Accuracy: the transforms lose bits, more for F(4,3) (its matrices hold 4, 5, 1/6 and
1/24); :attr:`WinogradBackend.capabilities` declares the factor on the direct-sum bound,
measured in ``docs/precision.md``.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from convkit.backend import Capabilities, ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends._common import input_grad_as_forward, input_grad_geometry, reuse
from convkit_backends._numba_runtime import jit
from convkit_backends.numba_loops import NumbaBackend

# 'contract' (FMA) and 'reassoc' keep NaN/Inf semantics; the kernels only see finite data.
_FLAGS = {"contract", "reassoc"}
_jit = jit(nogil=True, fastmath=_FLAGS)

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


@dataclass(frozen=True)
class Variant:
    """F(m x m, 3 x 3): ``bt (a, a)`` input, ``g (a, 3)`` filter, ``at (m, a)`` output
    transform, ``a = m + 2`` (interpolation points 0, ±1, ±2 and infinity)."""

    m: int
    bt: np.ndarray
    g: np.ndarray
    at: np.ndarray

    @property
    def a(self) -> int:
        return self.m + 2


F2 = Variant(
    2,
    bt=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
    g=np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]]),
    at=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
)
F4 = Variant(
    4,
    bt=np.array([[4, 0, -5, 0, 1, 0],
                 [0, -4, -4, 1, 1, 0],
                 [0, 4, -4, -1, 1, 0],
                 [0, -2, -1, 2, 1, 0],
                 [0, 2, -1, -2, 1, 0],
                 [0, 4, 0, -5, 0, 1]], np.float64),
    g=np.array([[1 / 4, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0, 0, 1]]),
    at=np.array([[1, 1, 1, 1, 1, 0],
                 [0, 1, -1, 2, -2, 0],
                 [0, 1, 1, 4, 4, 0],
                 [0, 1, -1, 8, -8, 1]], np.float64),
)
VARIANTS = {2: F2, 4: F4}


@jit(inline="always", fastmath=_FLAGS)
def _bt4(d0, d1, d2, d3, o0, o1, o2, o3, count: int):
    """F(2,3)'s ``Bᵀ`` along one axis: ``o = Bᵀ d`` for each of ``count`` tiles."""
    for t in range(count):
        a0, a1, a2, a3 = d0[t], d1[t], d2[t], d3[t]
        o0[t] = a0 - a2
        o1[t] = a1 + a2
        o2[t] = a2 - a1
        o3[t] = a1 - a3


@jit(inline="always", fastmath=_FLAGS)
def _bt6(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5, count: int):
    """F(4,3)'s ``Bᵀ`` along one axis: ``o = Bᵀ d`` for each of ``count`` tiles."""
    for t in range(count):
        a0, a1, a2, a3, a4, a5 = d0[t], d1[t], d2[t], d3[t], d4[t], d5[t]
        o0[t] = 4 * a0 - 5 * a2 + a4
        o1[t] = (a3 + a4) - 4 * (a1 + a2)
        o2[t] = (a4 - a3) + 4 * (a1 - a2)
        o3[t] = (a4 - a2) + 2 * (a3 - a1)
        o4[t] = (a4 - a2) + 2 * (a1 - a3)
        o5[t] = 4 * a1 - 5 * a3 + a5


@jit(inline="always", fastmath=_FLAGS)
def _at4(m0, m1, m2, m3, o0, o1, count: int):
    """F(2,3)'s ``Aᵀ`` along one axis: ``o = Aᵀ m`` for each of ``count`` tiles."""
    for t in range(count):
        b1, b2 = m1[t], m2[t]
        o0[t] = m0[t] + b1 + b2
        o1[t] = b1 - b2 - m3[t]


@jit(inline="always", fastmath=_FLAGS)
def _at6(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3, count: int):
    """F(4,3)'s ``Aᵀ`` along one axis: ``o = Aᵀ m`` for each of ``count`` tiles."""
    for t in range(count):
        b1, b2, b3, b4 = m1[t], m2[t], m3[t], m4[t]
        s12, d12, s34, d34 = b1 + b2, b1 - b2, b3 + b4, b3 - b4
        o0[t] = m0[t] + s12 + s34
        o1[t] = d12 + 2 * d34
        o2[t] = s12 + 4 * s34
        o3[t] = d12 + 8 * d34 + m5[t]


@jit(inline="always")
def _split_row(src, phases, i: int, start: int, span: int, pl: int):
    """``phases[i, j, start + t] = padded_row[t*m + j]`` for ``t < span``, ``j < m``: the row
    ``src`` of ``x`` zero-padded by ``pl`` on the left and to ``m*span`` on the right."""
    m, w = phases.shape[1], src.shape[0]
    for j in range(m):
        p_j = phases[i, j, start:start + span]
        lo = 0 if pl <= j else min(span, (pl - j + m - 1) // m)  # first t*m + j - pl >= 0
        hi = min(span, max(lo, (w + pl - j + m - 1) // m))  # ... and < w
        p_j[:lo] = 0
        p_j[hi:] = 0
        for t in range(lo, hi):
            p_j[t] = src[t * m + j - pl]


@_jit
def _input_transform(x, v, pt, pl, row0, row1, th, tw, c0, c1, phases, h, hv):
    """Transformed input tiles ``v: (a*a, C, T)`` of tile rows ``[row0, row1)``, channels
    ``[c0, c1)``.

    ``x: (N, C, H, W)``; tile row ``r`` is image ``r // th``, tile row ``ty = r % th``; its
    ``tw`` tiles are ``v[:, :, (r - row0)*tw:][:, :, :tw]``, tile ``tx`` reading padded rows
    ``ty*m + [0, a)`` and columns ``tx*m + [0, a)``.

    Each padded input row is split by column phase into ``phases: (a, m, L)``, ``tw + 1``
    entries per tile row: column ``tx*m + j`` of a tile is ``phases[i, j % m, tx + j // m]``,
    so both 1-D transforms run as long vector loops over the whole block (``L`` entries,
    one junk tile per tile row) into ``h`` and ``hv: (a*a, L)``; the real tiles are then
    copied into ``v``. All scratch has ``x``'s dtype.
    """
    m = phases.shape[1]
    a = m + 2
    span = tw + 1
    length = (row1 - row0) * span - 1  # the last junk tile would read past the end
    h_in = x.shape[2]
    for c in range(c0, c1):
        for r in range(row0, row1):
            n, ty = r // th, r % th
            start = (r - row0) * span
            for i in range(a):
                src = ty * m + i - pt
                if 0 <= src < h_in:
                    _split_row(x[n, c, src], phases, i, start, span, pl)
                else:
                    phases[i, :, start:start + span] = 0
        for i in range(a):  # along rows of each tile: h = d B
            p, f = phases[i], i * a
            if m == 2:
                _bt4(p[0], p[1], p[0, 1:], p[1, 1:], h[f], h[f + 1], h[f + 2], h[f + 3],
                     length)
            else:
                _bt6(p[0], p[1], p[2], p[3], p[0, 1:], p[1, 1:], h[f], h[f + 1], h[f + 2],
                     h[f + 3], h[f + 4], h[f + 5], length)
        for q in range(a):  # along columns: hv = Bᵀ h
            if m == 2:
                _bt4(h[q], h[q + 4], h[q + 8], h[q + 12],
                     hv[q], hv[q + 4], hv[q + 8], hv[q + 12], length)
            else:
                _bt6(h[q], h[q + 6], h[q + 12], h[q + 18], h[q + 24], h[q + 30],
                     hv[q], hv[q + 6], hv[q + 12], hv[q + 18], hv[q + 24], hv[q + 30],
                     length)
        for p in range(a * a):  # drop the junk tiles
            for r in range(row1 - row0):
                v[p, c, r * tw:(r + 1) * tw] = hv[p, r * span:r * span + tw]


@_jit
def _output_transform(mm, y, row0, row1, th, tw, k0, k1, h, o):
    """``y[n, k]``'s tiles (``k`` in ``[k0, k1)``) of tile rows ``[row0, row1)`` from their
    products ``mm: (a*a, K, T)`` (laid out as in :func:`_input_transform`): ``Aᵀ M A``,
    cropped to ``y: (N, K, Ho, Wo)``. Scratch of ``y``'s dtype: ``h`` with at least
    ``a*m`` rows of ``T``, ``o: (m*m, T)``."""
    m = 2 if o.shape[0] == 4 else 4  # o has m*m rows
    a = m + 2
    count = (row1 - row0) * tw
    ho, wo = y.shape[2], y.shape[3]
    for k in range(k0, k1):
        for s in range(a):  # along rows of each tile: h = M A (mm[p, k]: contiguous)
            f, g = s * a, s * m
            if m == 2:
                _at4(mm[f, k], mm[f + 1, k], mm[f + 2, k], mm[f + 3, k], h[g], h[g + 1],
                     count)
            else:
                _at6(mm[f, k], mm[f + 1, k], mm[f + 2, k], mm[f + 3, k], mm[f + 4, k],
                     mm[f + 5, k], h[g], h[g + 1], h[g + 2], h[g + 3], count)
        for j in range(m):  # along columns: o = Aᵀ h
            if m == 2:
                _at4(h[j], h[j + 2], h[j + 4], h[j + 6], o[j], o[j + 2], count)
            else:
                _at6(h[j], h[j + 4], h[j + 8], h[j + 12], h[j + 16], h[j + 20],
                     o[j], o[j + 4], o[j + 8], o[j + 12], count)
        for r in range(row0, row1):  # scatter o[i*m + j, t] into the image
            n, ty = r // th, r % th
            base = (r - row0) * tw
            for i in range(min(m, ho - ty * m)):
                row = y[n, k, ty * m + i]
                for j in range(m):
                    src = o[i * m + j, base:base + tw]
                    for tx in range((wo - j + m - 1) // m):
                        row[tx * m + j] = src[tx]


def filter_transform(weight: np.ndarray, variant: Variant) -> np.ndarray:
    """``U: (a*a, K, C)``, ``G g Gᵀ`` of each ``(3, 3)`` filter of ``weight: (K, C, 3, 3)``,
    in ``weight``'s dtype.

    One GEMM: ``U[s*a + q] = sum_ij G[s, i] G[q, j] g[i, j]`` is ``kron(G, G) @ g`` with
    ``g`` flattened (``einsum`` took a second for 256 x 256 channels; the same GEMM in
    float64 and a rounding to float32 took 6x as long and changed ``U`` by at most
    2.6e-8 of its largest value).
    """
    k, c = weight.shape[:2]
    gg = np.kron(variant.g, variant.g).astype(weight.dtype)  # (a*a, 9)
    return (gg @ weight.reshape(k * c, 9).T).reshape(variant.a**2, k, c)


#: The per-call cost of one transformed filter element (computing ``U``, streaming it
#: through the GEMMs), in tile multiplications: it makes a layer with many channels and few
#: tiles (batch 1 at 14x14 x 256 channels: 16 tiles of F(4,3)) take F(2,3), whose ``U`` is
#: 2.25x smaller. Measured there: F(2,3) 10-16 ms, F(4,3) 19-23 ms.
FILTER_COST_TILES = 32


def choose_variant(geom: ConvGeometry) -> Variant:
    """The variant with the lower cost for ``geom``: ``a² * K * C * (tiles + 32)``: the GEMM
    multiplications over ``ceil(Ho/m) * ceil(Wo/m)`` tiles per image (F(4,3) wastes more on
    sizes not divisible by 4) plus the filter transform (:data:`FILTER_COST_TILES`)."""
    ho, wo = geom.out_size

    def cost(v: Variant) -> int:
        tiles = geom.batch * math.ceil(ho / v.m) * math.ceil(wo / v.m)
        return v.a**2 * (tiles + FILTER_COST_TILES)

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

    def blocks(self) -> list[tuple[int, int]]:
        return [(r, min(r + self.block_rows, self.rows))
                for r in range(0, self.rows, self.block_rows)]

    def workers(self) -> int:
        return max(1, min(numba.get_num_threads(), math.ceil(self.rows / self.block_rows)))

    def worker_bytes(self, geom: ConvGeometry) -> int:
        """One worker's buffers: a block's ``V`` and ``M`` and the transforms' scratch."""
        a, tiles = self.variant.a, self.block_rows * self.tw
        span = self.block_rows * (self.tw + 1)
        scratch = (a * self.variant.m + 2 * a * a) * span + self.variant.m**2 * tiles
        elements = a * a * (geom.in_channels + geom.out_channels) * tiles + scratch
        return elements * geom.dtype.itemsize


_pool: ThreadPoolExecutor | None = None
_blas: ThreadpoolController | None = None
_blas_limiter = None  # threadpoolctl's limiter while any call runs
_blas_lock = threading.Lock()
_blas_users = 0


def _workers_pool() -> ThreadPoolExecutor:
    """The worker threads, started at the first call (``NUMBA_NUM_THREADS`` of them)."""
    global _pool
    with _blas_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS,
                                       thread_name_prefix="convkit-winograd")
        return _pool


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS on one thread while any winograd call runs (each worker runs its own GEMMs).

    The limit is process-wide (BLAS has no per-thread setting): the first of overlapping
    calls sets it and the last restores what was there, so that calls from several threads
    cannot leave BLAS on one thread. Other BLAS users in the process run single-threaded
    meanwhile.
    """
    global _blas, _blas_limiter, _blas_users
    with _blas_lock:
        if _blas is None:
            _blas = ThreadpoolController()
        if _blas_users == 0:
            _blas_limiter = _blas.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


class _Scratch:
    """One worker's buffers for blocks of ``plan``: ``v``/``mm`` hold a block's transformed
    tiles and products, the rest is the transforms' scratch (see the kernels)."""

    def __init__(self, plan: _Plan, geom: ConvGeometry, tiles: int, products: bool = True):
        a, m, dtype = plan.variant.a, plan.variant.m, geom.dtype
        span = tiles // plan.tw * (plan.tw + 1)
        if products:
            self.v = np.empty((a * a, geom.in_channels, tiles), dtype)
            self.mm = np.empty((a * a, geom.out_channels, tiles), dtype)
        self.phases = np.empty((a, m, span), dtype)
        self.h, self.hv = np.empty((a * a, span), dtype), np.empty((a * a, span), dtype)
        self.o = np.empty((m * m, tiles), dtype)


def winograd_forward(
    x: np.ndarray, weight: np.ndarray, geom: ConvGeometry, variant: Variant
) -> np.ndarray:
    """``y: (N, K, Ho, Wo)`` of a 3x3 stride-1 convolution (``x: (N, C, H, W)``,
    ``weight: (K, C, 3, 3)``, finite) by Winograd ``variant``.

    Each worker takes whole blocks; when there are fewer blocks than workers (a small
    layer, one block), they share the block instead: the input transform split by channel,
    the GEMMs by tile position, the output transform by output channel.
    """
    plan = _Plan.make(geom, variant)
    y = np.empty(geom.output_shape, geom.dtype)
    pool = _workers_pool()
    with _one_blas_thread():
        u = filter_transform(weight, variant)
        if plan.workers() == 1 and numba.get_num_threads() > 1:
            _shared_block(x, u, y, geom, plan, pool)
        else:
            _blocks_per_worker(x, u, y, geom, plan, pool)
    _zero_padding_only(y, geom)
    return y


def _blocks_per_worker(x: np.ndarray, u: np.ndarray, y: np.ndarray, geom: ConvGeometry,
                       plan: _Plan, pool: ThreadPoolExecutor) -> None:
    """Every worker takes the next block and runs all three steps on it."""
    a, dtype = plan.variant.a, geom.dtype
    pt, _, pl, _ = geom.padding
    blocks = iter(plan.blocks())
    take = threading.Lock()
    c, k = geom.in_channels, geom.out_channels

    def work() -> None:
        buf = _Scratch(plan, geom, plan.block_rows * plan.tw)
        while True:
            with take:
                block = next(blocks, None)
            if block is None:
                return
            row0, row1 = block
            count = (row1 - row0) * plan.tw
            v, mm = reuse(buf.v, (a * a, c, count), dtype), reuse(buf.mm, (a * a, k, count), dtype)
            _input_transform(x, v, pt, pl, row0, row1, plan.th, plan.tw, 0, c, buf.phases,
                             buf.h, buf.hv)
            np.matmul(u, v, out=mm)
            _output_transform(mm, y, row0, row1, plan.th, plan.tw, 0, k, buf.h, buf.o)

    futures = [pool.submit(work) for _ in range(plan.workers() - 1)]
    work()
    for f in futures:
        f.result()


def _shared_block(x: np.ndarray, u: np.ndarray, y: np.ndarray, geom: ConvGeometry,
                  plan: _Plan, pool: ThreadPoolExecutor) -> None:
    """All tile rows as one block, each step split among ``numba.get_num_threads()``
    workers."""
    a, workers = plan.variant.a, numba.get_num_threads()
    pt, _, pl, _ = geom.padding
    bufs = [_Scratch(plan, geom, plan.rows * plan.tw, products=i == 0) for i in range(workers)]
    v, mm = bufs[0].v, bufs[0].mm

    def split(size: int) -> list[tuple[int, int]]:
        cuts = np.linspace(0, size, workers + 1).round().astype(int)
        return list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))

    def each(step, size: int) -> None:
        for f in [pool.submit(step, buf, lo, hi) for buf, (lo, hi) in zip(bufs, split(size),
                                                                       strict=True)]:
            f.result()

    each(lambda b, lo, hi: _input_transform(x, v, pt, pl, 0, plan.rows, plan.th, plan.tw, lo,
                                            hi, b.phases, b.h, b.hv), geom.in_channels)
    each(lambda b, lo, hi: np.matmul(u[lo:hi], v[lo:hi], out=mm[lo:hi]), a * a)
    each(lambda b, lo, hi: _output_transform(mm, y, 0, plan.rows, plan.th, plan.tw, lo, hi,
                                             b.h, b.o), geom.out_channels)


def _zero_padding_only(y: np.ndarray, geom: ConvGeometry) -> None:
    """Set the outputs whose 3x3 window lies wholly in the padding (padding above 2) to the
    exact 0 a direct sum gives; Winograd leaves rounding residue of the tile's pixels there."""
    (pt, pb, pl, pr), (ho, wo) = geom.padding, geom.out_size
    y[:, :, :max(0, pt - 2)] = 0
    y[:, :, ho - max(0, pb - 2):] = 0
    y[:, :, :, :max(0, pl - 2)] = 0
    y[:, :, :, wo - max(0, pr - 2):] = 0


def _finite(*arrays: np.ndarray) -> bool:
    """True if no array holds NaN or Inf: a sum of finite values is finite unless it
    overflows (then the call merely takes the exact path)."""
    return all(np.isfinite(np.sum(a)) for a in arrays)


class WinogradBackend(ConvBackend):
    """Winograd F(2x2,3x3) / F(4x4,3x3) forward and input gradient; exact weight gradient.

    ``tile``: 2 or 4 to force F(2,3) or F(4,3); ``None`` (the default) picks the one with
    fewer multiplications per layer (:func:`choose_variant`).
    """

    capabilities = Capabilities(
        groups=False, dilation=False, stride=False, kernel_sizes=frozenset({(3, 3)}),
        error_factor=4.0,
    )

    def __init__(self, tile: int | None = None) -> None:
        if tile is not None and tile not in VARIANTS:
            raise ValueError(f"tile must be one of {sorted(VARIANTS)} or None, got {tile!r}")
        self.tile = tile
        self._exact = NumbaBackend()

    def variant(self, geom: ConvGeometry) -> Variant:
        """The variant this backend runs for ``geom``."""
        return VARIANTS[self.tile] if self.tile is not None else choose_variant(geom)

    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        if geom.in_channels < MIN_CHANNELS or not _finite(x, weight):
            return self._exact.forward(x, weight, geom)
        return winograd_forward(x, weight, geom, self.variant(geom))

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        as_forward = None
        if geom.out_channels >= MIN_CHANNELS:
            as_forward = input_grad_as_forward(weight, geom, fewer_outputs=False)
        if as_forward is None:  # few channels, padding beyond the kernel, non-finite weights
            return self._exact.backward_input(grad_output, weight, geom)
        return self.forward(grad_output, *as_forward)

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        return self._exact.backward_weight(x, grad_output, geom)

    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        reduced = geom.out_channels if method == "backward_input" else geom.in_channels
        if method == "backward_weight" or reduced < MIN_CHANNELS:  # the exact path
            return 0
        if method == "backward_input":
            transposed = input_grad_geometry(geom)
            if transposed is None:  # the exact path, which declares none
                return 0
            geom = transposed
        variant = self.variant(geom)
        plan = _Plan.make(geom, variant)
        filters = variant.a**2 * geom.out_channels * geom.in_channels
        weights = 2 * filters * geom.dtype.itemsize  # U, and the flipped weight (input grad.)
        # Workers on blocks of their own, or sharing one (each with its scratch).
        return weights + numba.get_num_threads() * plan.worker_bytes(geom)

