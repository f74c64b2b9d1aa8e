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


def kernel_spectrum(kernel: np.ndarray, tiling: Tiling) -> np.ndarray:
    """``kernel: (kh, kw, G, og, ig)`` -> its spectrum in the form :func:`spectral_product`
    takes: ``(F, G, 2*og, ig)`` real ``[Re; Im]`` blocks. (Depthwise layers, ``ig == 1``,
    take :func:`trailing_spectrum` instead.)

    A kernel is small against its tile, so its ``(Th, Tw//2+1)`` spectrum is computed as two
    DFTs by real GEMMs (rows, then columns) instead of FFTs of mostly zero planes: one GEMM
    per step for all ``G*og*ig`` kernels, in place of ``kh`` short row transforms and
    ``Tw//2+1`` column transforms per kernel (measured 2.6x faster alone on 64x64 11x11
    kernels into 24x40 tiles, the 11x11 forward pass about 1.1x).
    The DFT matrices are rounded once, in float64, to the kernel's dtype.
    """
    kh, kw, g, og, ig = kernel.shape
    dtype = kernel.dtype
    taps = np.ascontiguousarray(kernel).reshape(kh, kw, g * og * ig)
    cos_w, sin_w = _dft_matrices(tiling.Tw // 2 + 1, kw, tiling.Tw, dtype)  # (V, kw) each
    # Rows: R[a, v] = sum_b K[a, b] e^{-2 pi i v b / Tw}, as [Re R; Im R]: (2, kh, V, M).
    rows = np.empty((2, kh, cos_w.shape[0], taps.shape[2]), dtype)
    np.matmul(cos_w, taps, out=rows[0])
    np.matmul(sin_w, taps, out=rows[1])
    np.negative(rows[1], out=rows[1])
    # Columns: S[u] = sum_a R[a] e^{-2 pi i u a / Th}, as one real GEMM on [Re R; Im R].
    cos_h, sin_h = _dft_matrices(tiling.Th, kh, tiling.Th, dtype)  # (Th, kh) each
    columns = np.block([[cos_h, sin_h], [-sin_h, cos_h]])  # (2*Th, 2*kh)
    spec = columns @ rows.reshape(2 * kh, -1)  # (2*Th, V*M): [Re S; Im S]
    spec = spec.reshape(2, tiling.freqs, g, og, ig)
    blocks = np.empty((tiling.freqs, g, 2, og, ig), dtype)
    np.copyto(blocks, spec.transpose(1, 2, 0, 3, 4))  # one pass: Re and Im blocks
    return blocks.reshape(tiling.freqs, g, 2 * og, ig)


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


def spectral_product(kernel: np.ndarray, xs: np.ndarray, og: int) -> np.ndarray:
    """``sum_c K[f, g, o, c] * X[f, g, c, p]`` -> ``(F, G, og, P)`` complex.

    ``kernel`` as :func:`kernel_spectrum` returns it; ``xs: (F, G, ig, P)`` complex.
    """
    real = xs.view(kernel.dtype)  # (F, G, ig, 2P): Re, Im interleaved
    m = np.matmul(kernel, real)  # (F, G, 2*og, 2P) = [Wr @ X; Wi @ X]
    m = m.view(xs.dtype)  # (F, G, 2*og, P) complex
    out = m[:, :, :og]
    wi_x = m[:, :, og:]
    # W @ X = Wr@X + i * Wi@X
    out.real -= wi_x.imag
    out.imag += wi_x.real
    return out


def cross_product(gs: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``sum_p conj(GY[f, g, o, p]) * X[f, g, c, p]`` -> ``(F, G, og, ig)`` complex.

    As real GEMMs on the float views: ``Re = GY . X`` and ``Im = (i*GY) . X`` (dot products
    over ``p`` with real and imaginary parts interleaved)."""
    f, g, og, p = gs.shape
    stacked = np.empty((f, g, 2 * og, p), gs.dtype)
    stacked[:, :, :og] = gs
    np.multiply(gs, 1j, out=stacked[:, :, og:])
    real_dtype = gs.real.dtype
    # BLAS ran the transposed operand 2x slower than a transposed copy plus a plain GEMM.
    xs_t = np.ascontiguousarray(xs.view(real_dtype).swapaxes(-1, -2))  # (F, G, 2P, ig)
    m = np.matmul(stacked.view(real_dtype), xs_t)  # (F, G, 2*og, ig): [Re; Im]
    ig = xs.shape[2]
    out = np.empty((f, g, og, ig, 2), real_dtype)
    # Two copies along ig, not one transposing copy whose innermost axis has length 2 (5x
    # slower, measured).
    out[..., 0] = m[:, :, :og]
    out[..., 1] = m[:, :, og:]
    return out.view(gs.dtype).reshape(f, g, og, ig)


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
