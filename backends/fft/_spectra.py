"""Tiles and spectra of the fft backend: gathering overlap-save tiles, the kernel's
spectrum, the per-frequency products (as real GEMMs) and putting output tiles back."""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft as sfft

from convkit_backends._buffers import Buffers
from convkit_backends.fft._plan import Tiling
from convkit_backends.fft._workers import copy_in_parts, share_out


def gather(
    src: np.ndarray,
    shift: tuple[int, int],
    tiling: Tiling,
    size: tuple[int, int] | None = None,
    leading: bool = True,
    *,
    buffers: Buffers,
    name: str,
    workers: int = 1,
) -> np.ndarray:
    """Tiles ``(Th, Tw, C, N, nh, nw)`` of ``V``, ``src: (N, C, Hs, Ws)`` shifted by ``shift``
    in a zero plane: tile ``(i, j)`` holds ``V[i*th : i*th + Th, j*tw : j*tw + Tw]``.

    ``size``: take only ``size`` rows and columns from each tile position (the weight
    gradient's ``(th, tw)`` output tiles), zero-filled to ``(Th, Tw)``. ``leading=False`` lays
    the tiles out ``(N, C, nh, nw, Th, Tw)`` (no transposition). The tiles are a view of
    ``buffers``' ``name`` (and ``name + ':canvas'``), copied by ``workers`` threads."""
    n, c, hs, ws = src.shape
    rows, cols = size or (tiling.Th, tiling.Tw)
    if leading and tiling.tiles == 1:
        return _one_tile(src, shift, tiling, (rows, cols), buffers.empty(
            name, (tiling.Th, tiling.Tw, c, n, 1, 1), src.dtype), workers)
    height = (tiling.nh - 1) * tiling.th + rows
    width = (tiling.nw - 1) * tiling.tw + cols
    top, left = shift
    framed = (rows, cols) != (tiling.Th, tiling.Tw)
    canvas = buffers.zeros(name + ":canvas", (n, c, height, width), src.dtype)
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
        tiles = buffers.empty(name, shape, src.dtype)
        copy_in_parts(tiles, view, workers)
    elif leading:
        tiles = buffers.zeros(name, (tiling.Th, tiling.Tw, *shape[2:]), src.dtype)
        copy_in_parts(tiles[:rows, :cols], view, workers)
    else:
        tiles = buffers.zeros(name, (*shape[:4], tiling.Th, tiling.Tw), src.dtype)
        copy_in_parts(tiles[..., :rows, :cols], view, workers)
    return tiles


def _one_tile(
    src: np.ndarray, shift: tuple[int, int], tiling: Tiling, size: tuple[int, int],
    tiles: np.ndarray, workers: int,
) -> np.ndarray:
    """:func:`gather` for one tile per image, leading layout: ``src`` goes straight into
    ``tiles: (Th, Tw, C, N, 1, 1)`` (its first ``size`` rows and columns), and only the rest
    is zeroed, with no canvas in between (one pass over the tile fewer)."""
    _, _, hs, ws = src.shape
    (rows, cols), (top, left) = size, shift
    plane = tiles.reshape(tiling.Th, tiling.Tw, *tiles.shape[2:4])
    r0, r1 = max(0, top), max(0, min(rows, top + hs))
    c0, c1 = max(0, left), max(0, min(cols, left + ws))
    r0, c0 = min(r0, r1), min(c0, c1)
    plane[:r0] = 0
    plane[r1:] = 0
    plane[r0:r1, :c0] = 0
    plane[r0:r1, c1:] = 0
    if r0 < r1 and c0 < c1:
        window = src[:, :, r0 - top:r1 - top, c0 - left:c1 - left].transpose(2, 3, 1, 0)
        copy_in_parts(plane[r0:r1, c0:c1], window, workers)
    return tiles


def _permute(values: tuple[int, ...], order: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(values[i] for i in order)


class KernelSpectrum:
    """The spectrum of ``weight: (Cout, Cg, kh, kw)`` (``groups`` groups, ``flipped``: the
    kernel rotated by 180 degrees) on ``(Th, Tw)`` tiles, as :func:`spectral_product` takes
    it: ``halves(v)``, the real and imaginary parts at column frequency ``v``, each
    ``(Th, G, Cout/G, Cg)``. (Depthwise layers multiply elementwise: see ``_depthwise``.)

    A kernel is small against its tile, so its spectrum is two DFTs by real GEMMs instead of
    FFTs of mostly zero planes: the rows' DFT for all ``Cout*Cg`` kernels at once, read
    straight from ``weight`` (a flip only reverses the small DFT matrices), then the
    columns' DFT one column frequency at a time, when the product needs it. The whole
    spectrum holds ``Cout*Cg`` planes against the images' ``N*Cin`` (eight times as many on
    the 8x64x28x28 11x11 layer) and, written out and read back, cost more than computing
    each column frequency's block where it is used, in cache.
    The DFT matrices are rounded once, in float64, to the weight's dtype.
    """

    def __init__(self, weight: np.ndarray, groups: int, flipped: bool, tiling: Tiling,
                 buffers: Buffers) -> None:
        cout, cg, kh, kw = weight.shape
        dtype = weight.dtype
        freqs = tiling.Tw // 2 + 1
        self.shape = (groups, cout // groups, cg)
        taps = weight.reshape(cout * cg, kh, kw).transpose(1, 2, 0)  # (kh, kw, M), a view
        cos_w, sin_w = _dft_matrices(freqs, kw, tiling.Tw, dtype)  # (V, kw) each
        cos_h, sin_h = _dft_matrices(tiling.Th, kh, tiling.Th, dtype)  # (Th, kh) each
        if flipped:  # tap b of a row is tap kw-1-b of the flipped kernel; likewise rows
            cos_w, sin_w, cos_h, sin_h = (m[:, ::-1] for m in (cos_w, sin_w, cos_h, sin_h))
        # Rows: R[a, v] = sum_b K[a, b] e^{-2 pi i v b / Tw}, as (kh, [Re R; Im R], V, M).
        self._rows = buffers.empty("rows", (kh, 2, freqs, cout * cg), dtype)
        np.matmul(np.vstack([cos_w, -sin_w]), taps, out=self._rows.reshape(kh, 2 * freqs, -1))
        # Columns: S[u] = sum_a R[a] e^{-2 pi i u a / Th}, so Re S[u] = sum_a cos Re R + sin Im R
        # and Im S[u] = sum_a cos Im R - sin Re R: one real GEMM over (a, Re/Im) per column
        # frequency (:meth:`halves`), its result (Th, [Re S, Im S], M). (Sharing the sums of
        # rows u and Th-u halves its multiplications, but the extra passes cost more.)
        real_part = np.stack([cos_h, sin_h], axis=2)  # (Th, kh, 2)
        imag_part = np.stack([-sin_h, cos_h], axis=2)
        self._column_dft = np.stack([real_part, imag_part], axis=1).reshape(2 * tiling.Th,
                                                                            2 * kh)

    def halves(self, v: int, buffers: Buffers) -> tuple[np.ndarray, np.ndarray]:
        """``Re W`` and ``Im W`` at column frequency ``v``: ``(Th, G, Cout/G, Cg)`` views of
        ``buffers``' ``'kernel'`` (the calling thread's), valid until its next call."""
        kh, _, _, m = self._rows.shape
        th = self._column_dft.shape[0] // 2
        block = buffers.empty("kernel", (th, 2, m), self._rows.dtype)
        matmul_in_pieces(self._column_dft, self._rows[:, :, v].reshape(2 * kh, m),
                         block.reshape(2 * th, m))
        return block[:, 0].reshape(th, *self.shape), block[:, 1].reshape(th, *self.shape)


#: Multiply-adds of a GEMM small enough for OpenBLAS's small-matrix kernels (no packing).
SMALL_GEMM = 10**6


def matmul_in_pieces(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a @ b`` for a wide ``b: (K, N)``, in pieces of its columns small enough for
    :data:`SMALL_GEMM`: a ``(72, 22) @ (22, 4096)`` GEMM ran 1.7x faster in pieces of 512
    columns than whole (one thread; its ``K`` is too short to pay for packing)."""
    m, k = a.shape
    step = max(64, SMALL_GEMM // (m * k))
    for first in range(0, b.shape[1], step):
        np.matmul(a, b[:, first:first + step], out=out[:, first:first + step])


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


def spectral_product(
    kernel: KernelSpectrum, xs: np.ndarray, transposed: bool, buffers: Buffers, workers: int
) -> np.ndarray:
    """``sum_c K[u, v, g, o, c] * X[u, v, g, c, p]`` -> ``(Th, V, G, og, P)`` complex.

    ``xs: (Th, V, G, ig, P)`` complex; ``K`` is ``kernel`` or, ``transposed``, its transpose
    per frequency and group. Per column frequency ``v``, two batched real GEMMs on the
    float view of ``X`` give ``Wr@X`` and ``Wi@X``, and ``W@X = Wr@X + i*(Wi@X)``: OpenBLAS's
    complex GEMM is slow on such small matrices.
    The column frequencies are shared out over ``workers`` threads (these GEMMs are too
    small for BLAS's own threads). The result is ``buffers``' ``'product'``.
    """
    th, freqs, g, _, p = xs.shape
    og = kernel.shape[2] if transposed else kernel.shape[1]
    ys = buffers.empty("product", (th, freqs, g, og, p), xs.dtype)

    def columns(vs: range) -> None:
        real_dtype = xs.real.dtype
        m = buffers.empty("product:gemm", (th, g, 2 * og, 2 * p), real_dtype)
        halves = m.view(xs.dtype)  # (Th, G, 2*og, P) complex: [Wr @ X; Wi @ X]
        wr_x, wi_x = halves[:, :, :og], halves[:, :, og:]
        turned = buffers.empty("product:turned", wi_x.shape, xs.dtype)  # i * Wi@X
        for v in vs:
            x = xs[:, v].view(real_dtype)
            real, imag = kernel.halves(v, buffers)
            if transposed:
                real, imag = real.swapaxes(-1, -2), imag.swapaxes(-1, -2)
            np.matmul(real, x, out=m[:, :, :og])
            np.matmul(imag, x, out=m[:, :, og:])
            # Complex ops on whole blocks: 2x faster than ufuncs on .real and .imag views.
            np.add(wr_x, np.multiply(wi_x, 1j, out=turned), out=ys[:, v])

    share_out(columns, freqs, workers)
    return ys


class WeightGradient:
    """The weight gradient ``sum_p conj(GY[u, v, g, o, p]) * X[u, v, g, c, p]``, summed over
    the work units' tiles and inverse-transformed into ``(Cout, cg, kh, kw)``.

    Per column frequency ``v`` (:meth:`add`, shared out over ``workers`` threads), the cross
    products ``C[u]`` of all ``Th`` rows, then at once, in cache, their inverse DFT over the
    rows ``u`` (a GEMM computing only the kernel's ``kh`` rows of taps), summed over the
    units into ``R: (kh, [Re, Im], V, M)``. At the end one GEMM inverse-transforms ``R``
    over the column frequencies into the taps (:meth:`result`).
    """

    def __init__(self, tiling: Tiling, tap_rows: range, groups: int, og: int, ig: int,
                 dtype: np.dtype, buffers: Buffers, workers: int) -> None:
        """``tap_rows``: the rows ``u`` of the correlation that are kernel taps,
        ``range(0, khe, dh)``."""
        self.tiling, self.shape = tiling, (groups, og, ig)
        self._buffers, self._workers, self._units = buffers, workers, 0
        th, kh = tiling.Th, len(tap_rows)
        freqs = tiling.Tw // 2 + 1
        self._row_sums = buffers.empty("rows", (kh, 2, freqs, groups * og * ig), dtype)
        # R[a] = sum_u C[u] e^{+2 pi i u a / Th}, as rows (a, [Re R, Im R]) from the rows
        # (u, [Re C, Im C]) of C.
        dft = _dft_matrices(th, tap_rows[-1] + 1, th, dtype)
        cos_h, sin_h = (m[:, tap_rows].T for m in dft)
        self._inverse = np.stack([np.stack([cos_h, -sin_h], axis=2),
                                  np.stack([sin_h, cos_h], axis=2)], axis=1).reshape(2 * kh, 2 * th)

    def add(self, gs: np.ndarray, xs: np.ndarray) -> None:
        """Add a unit's ``gs: (Th, V, G, og, P)`` and ``xs: (Th, V, G, ig, P)`` spectra.

        ``Re C = GY . X`` and ``Im C = (i*GY) . X`` over ``p``: real GEMMs on the float views
        (real and imaginary parts interleaved) of ``GY``, ``i*GY`` and ``X``."""
        th, freqs, g, og, p = gs.shape
        ig = xs.shape[3]
        kh, _, _, m = self._row_sums.shape
        real_dtype = self._row_sums.dtype
        first_unit = self._units == 0
        self._units += 1

        def columns(vs: range) -> None:
            buffers = self._buffers
            turned = buffers.empty("grad:i-gy", (th, g, og, p), gs.dtype)
            xs_t = buffers.empty("grad:x", (th, g, 2 * p, ig), real_dtype)
            cross = buffers.empty("grad:cross", (th, 2, g, og, ig), real_dtype)
            part = buffers.empty("grad:part", (2 * kh, m), real_dtype)
            for v in vs:
                np.multiply(gs[:, v], 1j, out=turned)
                # BLAS ran a transposed operand 2x slower than this copy plus a plain GEMM.
                np.copyto(xs_t, xs[:, v].view(real_dtype).swapaxes(-1, -2))
                np.matmul(gs[:, v].view(real_dtype), xs_t, out=cross[:, 0])
                np.matmul(turned.view(real_dtype), xs_t, out=cross[:, 1])
                target = self._row_sums[:, :, v].reshape(2 * kh, m)
                if first_unit:
                    matmul_in_pieces(self._inverse, cross.reshape(2 * th, m), target)
                else:
                    matmul_in_pieces(self._inverse, cross.reshape(2 * th, m), part)
                    target += part

        share_out(columns, freqs, self._workers)

    def result(self, columns: range) -> np.ndarray:
        """``(G*og, ig, kh, kw)``, a new array: the kernel taps at ``columns``
        (``range(0, kwe, dw)``), scaled by ``1 / (Th*Tw)``.

        The real inverse DFT over the column frequencies is one GEMM computing only the
        kernel's taps: ``w[b] = sum_v a_v (Re R[v] cos - Im R[v] sin)(2 pi v b / Tw)`` with
        ``a_v = 2`` but for ``v = 0`` and ``v = Tw/2`` (1), the other half of the spectrum."""
        kh, _, freqs, _ = self._row_sums.shape
        th, tw, dtype = self.tiling.Th, self.tiling.Tw, self._row_sums.dtype
        kw = len(columns)
        cos_w, sin_w = (m[:, columns].T for m in _dft_matrices(freqs, columns[-1] + 1, tw, dtype))
        weights = np.full(freqs, 2.0)
        weights[0] = 1.0
        if tw % 2 == 0:
            weights[-1] = 1.0
        weights /= th * tw
        real_inverse = np.hstack([cos_w * weights, -sin_w * weights]).astype(dtype)  # (kw, 2V)
        # Transposed, so each kernel row a lands straight in its place in (M, kh, kw).
        g, og, ig = self.shape
        taps = np.empty((g * og * ig, kh, kw), dtype)
        np.matmul(self._row_sums.reshape(kh, 2 * freqs, -1).transpose(0, 2, 1), real_inverse.T,
                  out=taps.transpose(1, 0, 2))
        return taps.reshape(g * og, ig, kh, kw)


def scatter(ys: np.ndarray, out: np.ndarray, tiling: Tiling, workers: int) -> None:
    """Inverse-transform ``ys: (Th, Tw//2+1, G, og, N, nh, nw)`` and write each tile's valid
    ``(th, tw)`` block (its last rows and columns) into ``out: (N, G*og, Ho, Wo)``."""
    # Inverse along the columns' axis 0 first, then the real inverse of the kept rows only.
    cols = sfft.ifft(ys, axis=0, overwrite_x=True, workers=workers)[tiling.Th - tiling.th:]
    planes = sfft.irfft(cols, n=tiling.Tw, axis=1, workers=workers)
    valid = planes[:, tiling.Tw - tiling.tw:]
    # (th, tw, G, og, N, nh, nw) -> (N, G, og, nh, th, nw, tw)
    place(valid.transpose(4, 2, 3, 5, 0, 6, 1), out, tiling, workers)


def place(blocks: np.ndarray, out: np.ndarray, tiling: Tiling, workers: int = 1) -> None:
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
            copy_in_parts(view, blocks[:, :, :, i0:i1, :rows, j0:j1, :cols], workers)


def _tile_groups(size: int, t: int) -> list[tuple[int, int, int]]:
    """``(first tile, end tile, outputs per tile)``: the whole tiles, then the cropped one."""
    whole, rest = divmod(size, t)
    groups = [(0, whole, t)] if whole else []
    return [*groups, (whole, whole + 1, rest)] if rest else groups
