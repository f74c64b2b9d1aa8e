"""The Winograd transforms of F(2x2, 3x3) and F(4x4, 3x3): their matrices, the numba
kernels that transform input tiles (``Bᵀ d B``) and products (``Aᵀ M A``) block by block, and
the filter transform (``G g Gᵀ``). :mod:`convkit_backends.winograd` drives them.

Kernels are compiled lazily per dtype and cached on disk; they release the GIL (the
backend's worker threads run them side by side), keep the arrays' dtype in every
temporary, and use ``fastmath`` only as ``{'contract', 'reassoc'}``. F(4,3)'s coefficients
are constants of the arrays' dtype (``dtype.type(4)``): numba types an integer literal times
a float32 as float64, which had these kernels convert every value there and back (the input
and output transforms of 56x56 and 28x28 images took 1.15-1.25x as long).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from convkit_backends.numba_direct._runtime import jit

# 'contract' (FMA) and 'reassoc' keep NaN/Inf semantics (the backend checks its results).
_FLAGS = {"contract", "reassoc"}
_jit = jit(nogil=True, fastmath=_FLAGS)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (cache keys)
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
    two, four, five = o0.dtype.type(2), o0.dtype.type(4), o0.dtype.type(5)
    for t in range(count):
        a0, a1, a2, a3, a4, a5 = d0[t], d1[t], d2[t], d3[t], d4[t], d5[t]
        o0[t] = four * a0 - five * a2 + a4
        o1[t] = (a3 + a4) - four * (a1 + a2)
        o2[t] = (a4 - a3) + four * (a1 - a2)
        o3[t] = (a4 - a2) + two * (a3 - a1)
        o4[t] = (a4 - a2) + two * (a1 - a3)
        o5[t] = four * a1 - five * a3 + a5


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
    two, four, eight = o0.dtype.type(2), o0.dtype.type(4), o0.dtype.type(8)
    for t in range(count):
        b1, b2, b3, b4 = m1[t], m2[t], m3[t], m4[t]
        s12, d12, s34, d34 = b1 + b2, b1 - b2, b3 + b4, b3 - b4
        o0[t] = m0[t] + s12 + s34
        o1[t] = d12 + two * d34
        o2[t] = s12 + four * s34
        o3[t] = d12 + eight * d34 + m5[t]


@jit(inline="always")
def _tile_columns(src, d, start: int, tw: int, pl: int):
    """``d[j, start + t] = padded_row[t*m + j]`` for ``j < a``, ``t < tw`` (``a = m + 2``
    rows of ``d``): column ``j`` of each of a row's ``tw`` tiles, from the image row ``src``
    zero-padded by ``pl`` on the left and with zeros past its end."""
    a, w = d.shape[0], src.shape[0]
    m = a - 2
    for t in range(tw):
        for j in range(a):
            col = t * m + j - pl
            d[j, start + t] = src[col] if 0 <= col < w else 0


def input_scratch_size(variant: Variant, rows: int, tw: int) -> int:
    """Elements of each of :func:`transform_input`'s scratch arrays for blocks of ``rows``
    tile rows of ``tw`` tiles."""
    return variant.a * variant.m * (rows + 1) * tw


@_jit
def transform_input(x, v, pt, pl, row0, row1, th, tw, c0, c1, d, h):
    """Transformed input tiles ``v: (a*a, C, T)`` of tile rows ``[row0, row1)``, channels
    ``[c0, c1)``.

    ``x: (N, C, H, W)``; tile row ``r`` is image ``r // th``, tile row ``ty = r % th``; its
    ``tw`` tiles are ``v[:, :, (r - row0)*tw:][:, :, :tw]``, tile ``tx`` reading padded rows
    ``ty*m + [0, a)`` and columns ``tx*m + [0, a)``.

    Per channel and image, the ``R*m + 2`` padded rows that the block's ``R`` tile rows read
    are gathered once, column ``j`` of every tile into row ``j`` of ``d`` (adjacent tiles
    share ``a - m`` columns, adjacent tile rows ``a - m`` rows). Row ``y`` goes to entries
    ``((y % m)*(R + 1) + y // m)*tw + [0, tw)``: rows grouped by their phase ``y % m``. Then
    both transforms are a few long vector loops, where loops over one tile row's ``tw`` tiles
    ran scalar: along rows (``h = d B``) one pass over all rows; along columns (``v = Bᵀ
    h``) tile row ``ty`` reads rows ``ty*m + i``, i.e. phase ``i % m`` at group ``ty + i //
    m``, so one pass per column ``q`` covers all ``R`` tile rows and writes ``v`` directly
    (per channel of F(4,3): 8.6-9.8 against 5.6-7.0 us at 56x56, 10.2-10.5 against 8.4-9.0
    for 4 images at 28x28, in process; results bit-identical to tile row by tile row).
    Scratch of ``x``'s dtype: ``d`` and ``h`` of at least :func:`input_scratch_size` elements
    each (any shape, C-contiguous).
    """
    m = 4 if v.shape[0] == 36 else 2
    a = m + 2
    h_in = x.shape[2]
    for c in range(c0, c1):
        r = row0
        while r < row1:  # the block's tile rows of one image at a time
            n, ty0 = r // th, r % th
            ty1 = min(th, ty0 + (row1 - r))
            rows = ty1 - ty0
            groups = rows + 1  # of m padded rows each: rows*m + 2 of them are read
            length = m * groups * tw
            dd = d.reshape(-1)[:a * length].reshape(a, length)
            hh = h.reshape(-1)[:a * length].reshape(a, length)
            for y in range(m * groups):
                start = ((y % m) * groups + y // m) * tw
                src = ty0 * m + y - pt
                if y < rows * m + 2 and 0 <= src < h_in:
                    _tile_columns(x[n, c, src], dd, start, tw, pl)
                else:  # padding, or a row no tile reads (kept finite)
                    for j in range(a):
                        for t in range(tw):
                            dd[j, start + t] = 0
            out, count = (r - row0) * tw, rows * tw
            g = groups * tw  # from one row phase to the next
            if m == 2:  # rows i = 0..3 of a tile row: phase i % 2, group + i // 2
                _bt4(dd[0], dd[1], dd[2], dd[3], hh[0], hh[1], hh[2], hh[3], length)
                for q in range(a):
                    hq = hh[q]
                    _bt4(hq, hq[g:], hq[tw:], hq[g + tw:], v[q, c, out:], v[q + 4, c, out:],
                         v[q + 8, c, out:], v[q + 12, c, out:], count)
            else:  # rows i = 0..5: phase i % 4, group + i // 4
                _bt6(dd[0], dd[1], dd[2], dd[3], dd[4], dd[5], hh[0], hh[1], hh[2], hh[3],
                     hh[4], hh[5], length)
                for q in range(a):
                    hq = hh[q]
                    _bt6(hq, hq[g:], hq[2 * g:], hq[3 * g:], hq[tw:], hq[g + tw:],
                         v[q, c, out:], v[q + 6, c, out:], v[q + 12, c, out:],
                         v[q + 18, c, out:], v[q + 24, c, out:], v[q + 30, c, out:], count)
            r += ty1 - ty0


@_jit
def transform_output(mm, y, row0, row1, th, tw, k0, k1, h, o):
    """``y[n, k]``'s tiles (``k`` in ``[k0, k1)``) of tile rows ``[row0, row1)`` from their
    products ``mm: (a*a, K, T)`` (laid out as in :func:`transform_input`): ``Aᵀ M A``,
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
        whole = wo // m  # tiles whose m columns all lie in the image
        for r in range(row0, row1):  # scatter o[i*m + j, t] into the image
            n, ty = r // th, r % th
            base = (r - row0) * tw
            for i in range(min(m, ho - ty * m)):
                row = y[n, k, ty * m + i]
                if m == 4:  # a tile's 4 columns in one loop: stored as one interleaved
                    # group (the F(4,3) output transform 1.3-1.6x faster than a loop per
                    # column; pairs made F(2,3)'s slower, so it keeps those loops)
                    s0, s1 = o[4 * i, base:], o[4 * i + 1, base:]
                    s2, s3 = o[4 * i + 2, base:], o[4 * i + 3, base:]
                    for tx in range(whole):
                        row[4 * tx] = s0[tx]
                        row[4 * tx + 1] = s1[tx]
                        row[4 * tx + 2] = s2[tx]
                        row[4 * tx + 3] = s3[tx]
                    for j in range(wo - whole * m):  # the last tile's columns in the image
                        row[whole * m + j] = o[i * m + j, base + whole]
                else:
                    for j in range(m):
                        src = o[i * m + j, base:base + tw]
                        for tx in range((wo - j + m - 1) // m):
                            row[tx * m + j] = src[tx]


def filter_matrix(variant: Variant, dtype: np.dtype, flipped: bool = False) -> np.ndarray:
    """``kron(G, G): (a*a, 9)`` in ``dtype``, flagged read-only: ``U[s*a + q] = sum_ij
    G[s, i] G[q, j] g[i, j]`` is this matrix times ``g`` flattened. ``flipped``: its columns
    reversed, for the filters ``g`` rotated by 180 degrees."""
    return _filter_matrix(variant, np.dtype(dtype), flipped)


@functools.cache
def _filter_matrix(variant: Variant, dtype: np.dtype, flipped: bool) -> np.ndarray:
    """:func:`filter_matrix`, made once per variant, dtype and direction (``np.kron`` took
    14 us, 1% of a batch-1 layer)."""
    matrix = np.kron(variant.g, variant.g).astype(dtype)
    matrix = np.ascontiguousarray(matrix[:, ::-1]) if flipped else matrix
    matrix.setflags(write=False)
    return matrix


def spread_matrix(variant: Variant, dtype: np.dtype) -> np.ndarray:
    """``kron(A, A): (a*a, m*m)`` in ``dtype``, flagged read-only: an output gradient's
    ``m x m`` tile to its ``a x a`` positions (``A gy Aᵀ``, the weight gradient's)."""
    return _spread_matrix(variant, np.dtype(dtype))


@functools.cache
def _spread_matrix(variant: Variant, dtype: np.dtype) -> np.ndarray:
    matrix = np.kron(variant.at.T, variant.at.T).astype(dtype)
    matrix.setflags(write=False)
    return matrix


@_jit
def transform_filters(weight, g_g, u, k0, k1, taps):
    """``u[:, k] = g_g @ weight[k, c].ravel()`` (``U = G g Gᵀ``) for output channels ``k`` in
    ``[k0, k1)`` and every input channel ``c``; ``weight: (K, C, 3, 3)``, ``g_g``:
    :func:`filter_matrix`, ``u: (a*a, K, C)``, scratch ``taps: (9, C)``.

    A kernel, not one GEMM ``(a*a, 9) @ (9, K*C)``: OpenBLAS ran that on its own threads,
    which then spin after the call (about 0.1 s unless ``import convkit`` came before
    numpy's) and take a core from the backend's workers (the 8x256x14x14 GEMMs that followed
    ran at one core's speed). Here each worker takes output channels: each filter's taps are
    gathered into ``taps`` so the loop over input channels reads and writes consecutive
    elements (the 256 x 256 filters of F(4,3): 0.52 ms on 2 workers, against 0.96 ms for the
    GEMM on 2 BLAS threads).
    """
    channels = weight.shape[1]
    for k in range(k0, k1):
        for c in range(channels):
            for i in range(3):
                for j in range(3):
                    taps[3 * i + j, c] = weight[k, c, i, j]
        for p in range(g_g.shape[0]):
            row = u[p, k]
            g0, g1, g2, g3, g4 = g_g[p, 0], g_g[p, 1], g_g[p, 2], g_g[p, 3], g_g[p, 4]
            g5, g6, g7, g8 = g_g[p, 5], g_g[p, 6], g_g[p, 7], g_g[p, 8]
            for c in range(channels):
                row[c] = (g0 * taps[0, c] + g1 * taps[1, c] + g2 * taps[2, c]
                          + g3 * taps[3, c] + g4 * taps[4, c] + g5 * taps[5, c]
                          + g6 * taps[6, c] + g7 * taps[7, c] + g8 * taps[8, c])


@jit(nogil=True)  # no fastmath: the same rounding wherever numba compiles it in
def filters_at(by_tap, g_g, p, u):
    """``u: (K, C)``, the transformed filters at tile position ``p`` alone:
    ``sum_l g_g[p, l] * by_tap[l]`` over the weight's taps ``by_tap: (9, K, C)`` (tap ``l``
    of every filter; ``g_g``: :func:`filter_matrix`). Both arrays C-contiguous.

    Every position of both variants has 1, 3 or 9 nonzero coefficients. With 1 or 3 only
    those taps are read, else all 9; each case is one loop that reads its taps side by side
    and writes ``u`` once (a pass per nonzero tap, adding into ``u``, took 1.4-1.7x as long
    at 128 and 256 channels)."""
    size = u.size
    out = u.reshape(size)
    planes = by_tap.reshape(9, size)
    taps = np.nonzero(g_g[p])[0]
    if taps.size == 1:
        w0, s0 = g_g[p, taps[0]], planes[taps[0]]
        for i in range(size):
            out[i] = w0 * s0[i]
    elif taps.size == 3:
        w0, w1, w2 = g_g[p, taps[0]], g_g[p, taps[1]], g_g[p, taps[2]]
        s0, s1, s2 = planes[taps[0]], planes[taps[1]], planes[taps[2]]
        for i in range(size):
            out[i] = w0 * s0[i] + w1 * s1[i] + w2 * s2[i]
    else:  # all 9 (zero coefficients included when there are others)
        g0, g1, g2, g3, g4 = g_g[p, 0], g_g[p, 1], g_g[p, 2], g_g[p, 3], g_g[p, 4]
        g5, g6, g7, g8 = g_g[p, 5], g_g[p, 6], g_g[p, 7], g_g[p, 8]
        s0, s1, s2, s3, s4 = planes[0], planes[1], planes[2], planes[3], planes[4]
        s5, s6, s7, s8 = planes[5], planes[6], planes[7], planes[8]
        for i in range(size):
            out[i] = (g0 * s0[i] + g1 * s1[i] + g2 * s2[i] + g3 * s3[i] + g4 * s4[i]
                      + g5 * s5[i] + g6 * s6[i] + g7 * s7[i] + g8 * s8[i])
