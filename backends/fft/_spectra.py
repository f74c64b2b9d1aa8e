"""Tiles and spectra of the fft backend: gathering overlap-save tiles, the kernel's
spectrum, the per-frequency products (as real GEMMs) and putting output tiles back."""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft as sfft

from convkit_backends.fft._plan import Tiling


def gather(
    src: np.ndarray,
    shift: tuple[int, int],
    tiling: Tiling,
    size: tuple[int, int] | None = None,
    leading: bool = True,
) -> np.ndarray:
    """Tiles ``(Th, Tw, C, N, nh, nw)`` of ``V``, ``src: (N, C, Hs, Ws)`` shifted by ``shift``
    in a zero plane: tile ``(i, j)`` holds ``V[i*th : i*th + Th, j*tw : j*tw + Tw]``.

    ``size``: take only ``size`` rows and columns from each tile position (the weight
    gradient's ``(th, tw)`` output tiles), zero-filled to ``(Th, Tw)``. ``leading=False`` lays
    the tiles out ``(N, C, nh, nw, Th, Tw)`` (no transposition)."""
    n, c, hs, ws = src.shape
    rows, cols = size or (tiling.Th, tiling.Tw)
    height = (tiling.nh - 1) * tiling.th + rows
    width = (tiling.nw - 1) * tiling.tw + cols
    top, left = shift
    framed = (rows, cols) != (tiling.Th, tiling.Tw)
    canvas = np.zeros((n, c, height, width), src.dtype)
    r0, r1 = max(0, top), min(height, top + hs)
    c0, c1 = max(0, left), min(width, left + ws)
    if r0 < r1 and c0 < c1:
        canvas[:, :, r0:r1, c0:c1] = src[:, :, r0 - top:r1 - top, c0 - left:c1 - left]
    if not leading and tiling.tiles == 1 and not framed:
        return canvas.reshape(n, c, 1, 1, rows, cols)
    s_n, s_c, s_h, s_w = canvas.strides
    shape = (n, c, tiling.nh, tiling.nw, rows, cols)
    strides = (s_n, s_c, s_h * tiling.th, s_w * tiling.tw, s_h, s_w)
    if leading:
        shape, strides = _permute(shape, (4, 5, 1, 0, 2, 3)), _permute(strides, (4, 5, 1, 0, 2, 3))
    view = np.lib.stride_tricks.as_strided(canvas, shape=shape, strides=strides,
                                           writeable=False)
    if not framed:
        return np.ascontiguousarray(view)
    if leading:
        tiles = np.zeros((tiling.Th, tiling.Tw, *shape[2:]), src.dtype)
        tiles[:rows, :cols] = view
    else:
        tiles = np.zeros((*shape[:4], tiling.Th, tiling.Tw), src.dtype)
        tiles[..., :rows, :cols] = view
    return tiles


def _permute(values: tuple[int, ...], order: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(values[i] for i in order)


class KernelSpectrum:
    """The spectrum of ``kernel: (kh, kw, G, og, ig)`` on ``(Th, Tw)`` tiles, handed out one
    column frequency ``v`` at a time as :func:`spectral_product` takes it:
    ``block(v): (Th, G, 2*og, ig)`` real, per row frequency ``u`` and group the ``[Re; Im]``
    blocks. (Depthwise layers, ``ig == 1``, take :func:`trailing_spectrum` instead.)

    A kernel is small against its tile, so the spectrum is two DFTs by real GEMMs instead of
    FFTs of mostly zero planes. The row DFT of every kernel is computed once (``kh`` rows,
    ``Tw//2+1`` frequencies); the column DFT runs per ``v`` as one ``(2*Th, 2*kh)`` GEMM whose
    result stays in cache, so the whole ``(Th, Tw//2+1)`` spectrum, many times the kernel,
    is never built. ``keep=True`` computes every block up front, for callers that run several
    work units. The DFT matrices are rounded once, in float64, to the kernel's dtype.
    """

    def __init__(self, kernel: np.ndarray, tiling: Tiling, keep: bool = False) -> None:
        kh, kw, g, og, ig = kernel.shape
        dtype = kernel.dtype
        self.groups, self.out_per_group, self.tiling = g, og, tiling
        freqs = tiling.Tw // 2 + 1
        cos_w, sin_w = _dft_matrices(freqs, kw, tiling.Tw, dtype)  # (V, kw) each
        by_column = np.ascontiguousarray(kernel.transpose(1, 0, 2, 3, 4)).reshape(kw, -1)
        # R[a, v] = sum_b K[a, b] e^{-2 pi i v b / Tw}, as (V, [Re R; Im R], M)
        rows = np.empty((freqs, 2, by_column.shape[1]), dtype)
        np.matmul(cos_w, by_column, out=rows[:, 0])
        np.matmul(sin_w, by_column, out=rows[:, 1])
        np.negative(rows[:, 1], out=rows[:, 1])
        self._rows = rows.reshape(freqs, 2 * kh, g * og * ig)
        # S[u] = sum_a R[a] e^{-2 pi i u a / Th}: Re S[u] = [cos, sin] . [Re R; Im R] and
        # Im S[u] = [-sin, cos] . [Re R; Im R], the rows interleaved so a GEMM gives (Th, 2, M).
        cos_h, sin_h = _dft_matrices(tiling.Th, kh, tiling.Th, dtype)  # (Th, kh) each
        real_part, imag_part = np.hstack([cos_h, sin_h]), np.hstack([-sin_h, cos_h])
        self._columns = np.stack([real_part, imag_part], axis=1).reshape(2 * tiling.Th, 2 * kh)
        self._scratch = np.empty((tiling.Th, g, 2 * og, ig), dtype)
        self._by_part = None if g == 1 else np.empty((tiling.Th, 2, g, og, ig), dtype)
        self._kept = None
        if keep:
            self._kept = np.empty((freqs, *self._scratch.shape), dtype)
            for v in range(freqs):
                self._compute(v, self._kept[v])

    def block(self, v: int) -> np.ndarray:
        """``(Th, G, 2*og, ig)``: the ``[Re; Im]`` kernel blocks at column frequency ``v``
        (without ``keep``, valid until the next call)."""
        if self._kept is not None:
            return self._kept[v]
        return self._compute(v, self._scratch)

    def _compute(self, v: int, out: np.ndarray) -> np.ndarray:
        if self._by_part is None:  # one group: (Th, 2, og, ig) is already (Th, 1, 2*og, ig)
            np.matmul(self._columns, self._rows[v], out=out.reshape(len(self._columns), -1))
            return out
        by_part = self._by_part
        np.matmul(self._columns, self._rows[v], out=by_part.reshape(len(self._columns), -1))
        th, _, g, og, ig = by_part.shape
        np.copyto(out.reshape(th, g, 2, og, ig), by_part.transpose(0, 2, 1, 3, 4))
        return out


@functools.lru_cache(maxsize=64)
def _dft_matrices(
    freqs: int, taps: int, length: int, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """``cos(2 pi f t / length)`` and ``sin(...)``, each ``(freqs, taps)`` in ``dtype``: the
    first ``taps`` columns of a length-``length`` DFT matrix, ``e^{-i x} = cos x - i sin x``."""
    angles = 2 * np.pi * np.outer(np.arange(freqs), np.arange(taps)) / length
    cos, sin = np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)
    cos.flags.writeable = sin.flags.writeable = False
    return cos, sin


def trailing_spectrum(kernel: np.ndarray, tiling: Tiling, workers: int) -> np.ndarray:
    """``kernel: (..., kh, kw)`` -> its ``(..., Th, Tw//2+1)`` spectrum (rows first: only the
    kernel's ``kh`` rows are non-zero)."""
    rows = sfft.rfft(kernel, n=tiling.Tw, axis=-1, workers=workers)
    return sfft.fft(rows, n=tiling.Th, axis=-2, overwrite_x=True, workers=workers)


def spectral_product(kernel: KernelSpectrum, xs: np.ndarray) -> np.ndarray:
    """``sum_c K[u, v, g, o, c] * X[u, v, g, c, p]`` -> ``(Th, V, G, og, P)`` complex.

    ``xs: (Th, V, G, ig, P)`` complex. Per column frequency ``v``, one batched real GEMM
    ``[Wr; Wi] @ X`` on the float view of ``X`` gives ``Wr@X`` and ``Wi@X``, and
    ``W@X = Wr@X + i*(Wi@X)``: OpenBLAS's complex GEMM is slow on such small matrices.
    """
    th, freqs, g, _, p = xs.shape
    og = kernel.out_per_group
    real_dtype = xs.real.dtype
    ys = np.empty((th, freqs, g, og, p), xs.dtype)
    m = np.empty((th, g, 2 * og, 2 * p), real_dtype)
    halves = m.view(xs.dtype)  # (Th, G, 2*og, P) complex: [Wr @ X; Wi @ X]
    wr_x, wi_x = halves[:, :, :og], halves[:, :, og:]
    for v in range(freqs):
        np.matmul(kernel.block(v), xs[:, v].view(real_dtype), out=m)
        y = ys[:, v]
        np.subtract(wr_x.real, wi_x.imag, out=y.real)
        np.add(wr_x.imag, wi_x.real, out=y.imag)
    return ys


class WeightGradient:
    """The weight gradient ``sum_p conj(GY[u, v, g, o, p]) * X[u, v, g, c, p]``, summed over
    the work units' tiles and inverse-transformed into ``(Cout, cg, kh, kw)``.

    Per column frequency ``v``, the cross product of one unit is one batched real GEMM (see
    :meth:`add`), and its column inverse DFT, for the wanted kernel rows only (``rows``:
    ``range(0, khe, dh)``), another: the ``(Th, Tw//2+1)`` spectrum of all kernels, many times
    their size, is never built. The sums are kept as ``(V, [Re; Im] x rows, M)``.
    """

    def __init__(self, tiling: Tiling, rows: range, groups: int, og: int, ig: int,
                 dtype: np.dtype) -> None:
        self.tiling, self.rows, self.shape = tiling, rows, (groups, og, ig)
        freqs, th, kh = tiling.Tw // 2 + 1, tiling.Th, len(rows)
        cos_h, sin_h = _dft_matrices(th, rows[-1] + 1, th, dtype)  # (Th, khe) each
        cos_h, sin_h = cos_h[:, rows].T, sin_h[:, rows].T  # (kh, Th)
        # R[a] = sum_u C[u] e^{+2 pi i u a / Th} (unscaled): [Re R; Im R] from the rows
        # (u, Re/Im) of C, interleaved as the cross product's GEMM lays them out.
        real_part = np.stack([cos_h, -sin_h], axis=2).reshape(kh, 2 * th)
        imag_part = np.stack([sin_h, cos_h], axis=2).reshape(kh, 2 * th)
        self._inverse = np.vstack([real_part, imag_part])  # (2*kh, 2*Th)
        self._sums = np.zeros((freqs, 2 * kh, groups * og * ig), dtype)
        self._part = np.empty_like(self._sums[0])
        self._cross = np.empty((th, groups, 2 * og, ig), dtype)
        self._by_part = None if groups == 1 else np.empty((th, 2, groups, og, ig), dtype)

    def add(self, gs: np.ndarray, xs: np.ndarray) -> None:
        """Add a unit's ``gs: (Th, V, G, og, P)`` and ``xs: (Th, V, G, ig, P)`` spectra.

        ``Re = GY . X`` and ``Im = (i*GY) . X`` over ``p``, as one real GEMM on the float
        views (real and imaginary parts interleaved) of ``[GY; i*GY]`` and ``X``."""
        th, freqs, g, og, p = gs.shape
        real_dtype = self._sums.dtype
        stacked = np.empty((th, g, 2 * og, p), gs.dtype)
        xs_t = np.empty((th, g, 2 * p, xs.shape[3]), real_dtype)
        for v in range(freqs):
            stacked[:, :, :og] = gs[:, v]
            np.multiply(gs[:, v], 1j, out=stacked[:, :, og:])
            # BLAS ran a transposed operand 2x slower than this copy plus a plain GEMM.
            np.copyto(xs_t, xs[:, v].view(real_dtype).swapaxes(-1, -2))
            np.matmul(stacked.view(real_dtype), xs_t, out=self._cross)
            cross = self._cross
            if self._by_part is not None:  # (u, g, Re/Im) rows -> (u, Re/Im, g)
                np.copyto(self._by_part, cross.reshape(th, g, 2, og, -1).transpose(0, 2, 1, 3, 4))
                cross = self._by_part
            np.matmul(self._inverse, cross.reshape(2 * th, -1), out=self._part)
            self._sums[v] += self._part

    def result(self, columns: range) -> np.ndarray:
        """``(G*og, ig, kh, kw)``: the kernel taps at ``columns`` (``range(0, kwe, dw)``)."""
        freqs, two_kh, m = self._sums.shape
        kh = two_kh // 2
        rows = np.empty((kh, freqs, m), np.result_type(self._sums.dtype, np.complex64))
        rows.real = self._sums[:, :kh].transpose(1, 0, 2)
        rows.imag = self._sums[:, kh:].transpose(1, 0, 2)
        rows /= self.tiling.Th
        full = sfft.irfft(rows, n=self.tiling.Tw, axis=1)  # (kh, Tw, M)
        g, og, ig = self.shape
        taps = full[:, columns].reshape(kh, len(columns), g * og, ig)
        return taps.transpose(2, 3, 0, 1)


def scatter(
    ys: np.ndarray, out: np.ndarray, kernel: tuple[int, int], tiling: Tiling, workers: int
) -> None:
    """Inverse-transform ``ys: (Th, Tw//2+1, G, og, N, nh, nw)`` and write each tile's valid
    ``(th, tw)`` block (rows and columns from ``k - 1``) into ``out: (N, G*og, Ho, Wo)``."""
    kh, kw = kernel
    # Inverse along the columns' axis 0 first, then the real inverse of the kept rows only.
    cols = sfft.ifft(ys, axis=0, overwrite_x=True, workers=workers)[kh - 1:kh - 1 + tiling.th]
    planes = sfft.irfft(cols, n=tiling.Tw, axis=1, workers=workers)
    valid = planes[:, kw - 1:kw - 1 + tiling.tw]
    # (th, tw, G, og, N, nh, nw) -> (N, G, og, nh, th, nw, tw)
    place(valid.transpose(4, 2, 3, 5, 0, 6, 1), out, tiling)


def place(blocks: np.ndarray, out: np.ndarray, tiling: Tiling) -> None:
    """Write tiles ``blocks: (N, G, og, nh, th, nw, tw)`` into ``out: (N, G*og, Ho, Wo)``.

    The last row and column of tiles may reach past the output: each of the (up to four)
    groups of whole and cropped tiles is copied through a view of ``out`` split into tiles.
    """
    n, g, og = blocks.shape[:3]
    (ho, wo), (th, tw) = out.shape[2:], (tiling.th, tiling.tw)
    s_n, s_c, s_h, s_w = out.strides
    for i0, i1, rows in _tile_groups(ho, th):
        for j0, j1, cols in _tile_groups(wo, tw):
            corner = out[:, :, i0 * th:, j0 * tw:]
            view = np.lib.stride_tricks.as_strided(
                corner, shape=(n, g, og, i1 - i0, rows, j1 - j0, cols),
                strides=(s_n, s_c * og, s_c, s_h * th, s_h, s_w * tw, s_w))
            np.copyto(view, blocks[:, :, :, i0:i1, :rows, j0:j1, :cols])


def _tile_groups(size: int, t: int) -> list[tuple[int, int, int]]:
    """``(first tile, end tile, outputs per tile)``: the whole tiles, then the cropped one."""
    whole, rest = divmod(size, t)
    groups = [(0, whole, t)] if whole else []
    return [*groups, (whole, whole + 1, rest)] if rest else groups
