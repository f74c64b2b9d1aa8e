"""Winograd F(2x2, 3x3) and F(4x4, 3x3) (Lavin & Gray 2015) for 3x3, stride-1 convolutions.

The output is cut into ``m x m`` tiles (``m`` = 2 or 4), each computed from an
``a x a`` input tile (``a = m + 2``) as ``Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d Bᵀᵀ)] A`` summed over input
channels: the ``a²`` elementwise products over channels become ``a²`` GEMMs
``U[p] (K x C) @ V[p] (C x tiles)``, which is where the time goes and BLAS does them.
F(2,3) does 2.25x fewer multiplications than a direct sum, F(4,3) 4x.

Per call: the filter transform ``U = G g Gᵀ`` once (in float64, rounded once to the
dtype). The tiles are processed in blocks of whole tile rows, small enough that a block's
transformed input ``V`` and its products ``M`` stay in a core's L2 cache
(:data:`BLOCK_BYTES`). Each worker thread (``numba.get_num_threads()`` of them) takes the
next block, transforms its input tiles (a numba kernel), multiplies by BLAS on one thread
and transforms the products back into the output (numba): the two cores never wait for each
other between the steps, and numba's and BLAS's thread pools never fight (a two-thread
OpenBLAS GEMM shared with a busy core was measured 10-50x slower than on one thread).

Input gradient: a forward pass over the output gradient with the flipped, transposed weight
(stride 1). Weight gradient: the exact numba kernels (:class:`NumbaBackend`); Winograd's
weight gradient would be inexact too and gains less. Non-finite inputs or weights: the
transforms mix the values of a whole tile, so NaN and Inf would land where a direct sum
has none; such calls run on the exact numba backend instead (one ``sum`` of each operand
detects them).

Accuracy: the transforms lose bits, more for F(4,3) (its matrices hold 4, 5, 1/6 and
1/24); :attr:`WinogradBackend.capabilities` declares the factor on the direct-sum bound,
measured in ``docs/precision.md``.
"""

from __future__ import annotations

import math
import threading
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

#: Bytes of one block's transformed input (its products take as much per output channel):
#: both fit in one core's 1 MiB L2 cache with room for the filter and the tiles.
BLOCK_BYTES = 256 * 2**10


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
def _input_1d(d, o, a: int, first: int, step: int, count: int):
    """``o[first + step*q] = (Bᵀ d[first + step*j])[q]`` over ``j, q < a``, ``count`` tiles."""
    f, s = first, step
    if a == 4:
        _bt4(d[f], d[f + s], d[f + 2 * s], d[f + 3 * s],
             o[f], o[f + s], o[f + 2 * s], o[f + 3 * s], count)
    else:
        _bt6(d[f], d[f + s], d[f + 2 * s], d[f + 3 * s], d[f + 4 * s], d[f + 5 * s],
             o[f], o[f + s], o[f + 2 * s], o[f + 3 * s], o[f + 4 * s], o[f + 5 * s], count)


@jit(inline="always")
def _output_1d(mm, o, a: int, first: int, step: int, out_first: int, out_step: int,
               count: int):
    """``o[out_first + out_step*i] = (Aᵀ mm[first + step*q])[i]`` over ``q < a``,
    ``i < a - 2``, ``count`` tiles."""
    f, s, g, u = first, step, out_first, out_step
    if a == 4:
        _at4(mm[f], mm[f + s], mm[f + 2 * s], mm[f + 3 * s], o[g], o[g + u], count)
    else:
        _at6(mm[f], mm[f + s], mm[f + 2 * s], mm[f + 3 * s], mm[f + 4 * s], mm[f + 5 * s],
             o[g], o[g + u], o[g + 2 * u], o[g + 3 * u], count)


@_jit
def _input_transform(x, v, pt, pl, row0, row1, th, tw, rows, d, h):
    """Transformed input tiles ``v: (a*a, C, T)`` of tile rows ``[row0, row1)``.

    ``x: (N, C, H, W)``; tile row ``r`` is image ``r // th``, tile row ``ty = r % th``; its
    ``tw`` tiles are ``v[:, :, (r - row0)*tw:][:, :, :tw]``, tile ``tx`` reading padded rows
    ``ty*m + [0, a)`` and columns ``tx*m + [0, a)``. Scratch of ``x``'s dtype:
    ``rows: (a, tw*m + 2)``, ``d`` and ``h``: ``(a*a, T)``.
    """
    a = 4 if d.shape[0] == 16 else 6  # d has a*a rows
    m = a - 2
    count = (row1 - row0) * tw
    h_in, w_in = x.shape[2], x.shape[3]
    width = rows.shape[1]
    lo = min(pl, width)
    hi = max(lo, min(width, w_in + pl))
    for c in range(x.shape[1]):
        for r in range(row0, row1):  # gather the raw tiles d[i*a + j, t]
            n, ty = r // th, r % th
            base = (r - row0) * tw
            for i in range(a):
                src = ty * m + i - pt
                row = rows[i]
                row[:] = 0
                if 0 <= src < h_in:
                    row[lo:hi] = x[n, c, src, lo - pl:hi - pl]
                for j in range(a):
                    dst = d[i * a + j, base:base + tw]
                    for tx in range(tw):
                        dst[tx] = row[tx * m + j]
        v_c = v[:, c, :]
        for i in range(a):  # along rows of each tile: h = d B
            _input_1d(d, h, a, i * a, 1, count)
        for q in range(a):  # along columns: v = Bᵀ h
            _input_1d(h, v_c, a, q, a, count)


@_jit
def _output_transform(mm, y, row0, row1, th, tw, h, o):
    """``y[n, k]``'s tiles of tile rows ``[row0, row1)`` from their products
    ``mm: (a*a, K, T)`` (laid out as in :func:`_input_transform`): ``Aᵀ M A``, cropped to
    ``y: (N, K, Ho, Wo)``. Scratch of ``y``'s dtype: ``h: (a*m, T)``, ``o: (m*m, T)``."""
    m = 2 if o.shape[0] == 4 else 4  # o has m*m rows
    a = m + 2
    count = (row1 - row0) * tw
    ho, wo = y.shape[2], y.shape[3]
    for k in range(y.shape[1]):
        m_k = mm[:, k, :]
        for s in range(a):  # along rows of each tile: h = M A
            _output_1d(m_k, h, a, s * a, 1, s * m, 1, count)
        for j in range(m):  # along columns: o = Aᵀ h
            _output_1d(h, o, a, j, m, j, m, count)
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
    computed in float64 and rounded once to ``weight``'s dtype.

    One GEMM: ``U[s*a + q] = sum_ij G[s, i] G[q, j] g[i, j]`` is ``kron(G, G) @ g`` with
    ``g`` flattened (``einsum`` took a second for 256 x 256 channels).
    """
    k, c = weight.shape[:2]
    flat = weight.reshape(k * c, 9).astype(np.float64)
    u = np.kron(variant.g, variant.g) @ flat.T  # (a*a, K*C)
    return u.astype(weight.dtype).reshape(variant.a**2, k, c)


def choose_variant(geom: ConvGeometry) -> Variant:
    """The variant with fewer GEMM multiplications for ``geom``'s output: ``a²`` per tile,
    over ``ceil(Ho/m) * ceil(Wo/m)`` tiles (F(4,3) wastes more on sizes not divisible by 4)."""
    ho, wo = geom.out_size

    def products(v: Variant) -> int:
        return v.a**2 * math.ceil(ho / v.m) * math.ceil(wo / v.m)

    return min((F4, F2), key=products)


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
        block_rows = max(1, BLOCK_BYTES // (per_row * geom.dtype.itemsize))
        return cls(variant, th, tw, geom.batch * th, min(block_rows, geom.batch * th))

    def blocks(self) -> list[tuple[int, int]]:
        return [(r, min(r + self.block_rows, self.rows))
                for r in range(0, self.rows, self.block_rows)]

    def workers(self) -> int:
        return max(1, min(numba.get_num_threads(), math.ceil(self.rows / self.block_rows)))

    def worker_bytes(self, geom: ConvGeometry) -> int:
        """One worker's buffers: a block's ``V`` and ``M`` and the transforms' scratch."""
        a, tiles = self.variant.a, self.block_rows * self.tw
        scratch = a * (self.tw * self.variant.m + 2) + (2 * a * a + self.variant.m**2) * tiles
        elements = a * a * (geom.in_channels + geom.out_channels) * tiles + scratch
        return elements * geom.dtype.itemsize


_blas: ThreadpoolController | None = None
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers_pool() -> tuple[ThreadPoolExecutor, ThreadpoolController]:
    global _blas, _pool
    with _pool_lock:
        if _pool is None:
            _blas = ThreadpoolController()
            _pool = ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS,
                                       thread_name_prefix="convkit-winograd")
        return _pool, _blas


def winograd_forward(
    x: np.ndarray, weight: np.ndarray, geom: ConvGeometry, variant: Variant
) -> np.ndarray:
    """``y: (N, K, Ho, Wo)`` of a 3x3 stride-1 convolution (``x: (N, C, H, W)``,
    ``weight: (K, C, 3, 3)``, finite) by Winograd ``variant``."""
    plan = _Plan.make(geom, variant)
    a, m, dtype = variant.a, variant.m, geom.dtype
    y = np.empty(geom.output_shape, dtype)
    pt, _, pl, _ = geom.padding
    blocks = iter(plan.blocks())
    take = threading.Lock()

    def work() -> None:
        tiles = plan.block_rows * plan.tw
        v = np.empty((a * a, geom.in_channels, tiles), dtype)
        mm = np.empty((a * a, geom.out_channels, tiles), dtype)
        rows = np.empty((a, plan.tw * m + 2), dtype)
        d, h = np.empty((a * a, tiles), dtype), np.empty((a * a, tiles), dtype)
        o = np.empty((m * m, tiles), dtype)
        while True:
            with take:
                block = next(blocks, None)
            if block is None:
                return
            row0, row1 = block
            count = (row1 - row0) * plan.tw
            v_b = reuse(v, (a * a, geom.in_channels, count), dtype)
            m_b = reuse(mm, (a * a, geom.out_channels, count), dtype)
            _input_transform(x, v_b, pt, pl, row0, row1, plan.th, plan.tw, rows, d, h)
            np.matmul(u, v_b, out=m_b)
            _output_transform(m_b, y, row0, row1, plan.th, plan.tw, h, o)

    pool, blas = _workers_pool()
    with blas.limit(limits=1, user_api="blas"):
        u = filter_transform(weight, variant)
        futures = [pool.submit(work) for _ in range(plan.workers() - 1)]
        work()
        for f in futures:
            f.result()
    _zero_padding_only(y, geom)
    return y


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
        weights = (3 * filters * 8 + filters * geom.dtype.itemsize  # float64 einsum, U
                   + 9 * filters * geom.dtype.itemsize)  # the flipped weight (input gradient)
        return weights + plan.workers() * plan.worker_bytes(geom)

