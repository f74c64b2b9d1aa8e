"""Convolution by FFT (``scipy.fft``): the cost hardly depends on the kernel size.

All three operations are stride-1 convolutions computed tile by tile (overlap-save):

* forward: ``y = xp (*) w``, the cross-correlation of the padded input with the kernel;
* input gradient: ``grad_x``, the full convolution of ``grad_output`` with the kernel, cropped
  to the input (the same engine, fed ``grad_output`` shifted by ``k-1-p`` and the unflipped,
  transposed kernel);
* weight gradient: the correlation of the padded input with ``grad_output``, summed over the
  images and tiles inside the spectral GEMM.

Dilation uses the zero-inserted kernel ``(dh*(kh-1)+1, dw*(kw-1)+1)``; stride > 1 is declared
unsupported (it computes every stride-1 output and throws most away, and never won here).

**Layout.** Tiles are gathered into ``(Th, Tw, C, B*P)`` real arrays (``P`` tiles per image)
and transformed over the two leading axes, so a spectrum is ``(F, C, B*P)`` with
``F = Th * (Tw//2 + 1)`` frequencies: each frequency is one small GEMM over channels, and all
of them are one batched ``np.matmul``. OpenBLAS's complex GEMM is slow on such small
matrices, so each complex product ``W @ X`` runs as one real GEMM: ``[Wr; Wi] @ X`` on the
float view of ``X`` gives ``Wr@X`` and ``Wi@X``, and ``W@X = Wr@X + i*(Wi@X)``. Depthwise
layers (one input channel per group) multiply elementwise instead.

**Precision.** float32 is transformed in complex64, float64 in complex128. FFT rounding
spreads over a whole tile (about ``eps * log2(Th*Tw) * norms``), so the error of an output is
not proportional to its own direct-sum magnitude: the backend declares
``Capabilities.error_factor`` (see ``docs/fft.md`` for the measurements behind it).

**Non-finite values.** An FFT spreads one NaN or Inf over every output of its tile, which no
direct method does. Each call checks its operands (one summation pass) and computes calls
with NaN or Inf exactly with the ``im2col-strided`` backend's code, so NaN/Inf land where the
other backends put them.

**Memory.** The tile size is chosen by a cost model among 5-smooth lengths
(``scipy.fft.next_fast_len``), bounded so the weight spectrum fits in a quarter of
:attr:`FftBackend.budget`; the batch is processed in chunks whose tiles and spectra fit in
the rest. :meth:`FftBackend.workspace_bytes` declares the largest chunk's buffers.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np

try:
    import scipy.fft as sfft
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the fft backend needs scipy, which is not installed: pip install 'convkit[fft]'"
    ) from exc

from convkit.backend import Capabilities, ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends._common import images_per_chunk
from convkit_backends.im2col_strided import Im2colStridedBackend

#: Default bytes of temporary buffers per call (spectra, tiles); the weight spectrum may use
#: a quarter of it.
DEFAULT_BUDGET = 256 * 2**20
#: The declared accuracy (:class:`~convkit.Capabilities`): within ``ERROR_FACTOR`` times the
#: direct-sum bound ``n*eps*sum|terms|`` plus ``ERROR_SPREAD * eps * max(sum|terms|)``. Measured
#: worst cases (docs/fft.md): the spread term alone needs 3.1 (float64) and 1.4 (float32);
#: with a factor of 1 it needs 0.75. Declared with about 4x headroom on each.
ERROR_FACTOR = 2.0
ERROR_SPREAD = 8.0

_exact = Im2colStridedBackend()


@dataclass(frozen=True)
class Tiling:
    """Overlap-save tiles: ``(nh, nw)`` tiles of ``(Th, Tw)`` inputs each producing ``(th, tw)``
    outputs (``T = t + k - 1`` along each axis, ``k`` the dilated kernel size)."""

    Th: int
    Tw: int
    th: int
    tw: int
    nh: int
    nw: int

    @property
    def tiles(self) -> int:
        return self.nh * self.nw

    @property
    def freqs(self) -> int:
        """Frequencies of one tile's real-to-complex spectrum, ``Th * (Tw//2 + 1)``."""
        return self.Th * (self.Tw // 2 + 1)


class FftBackend(ConvBackend):
    """Overlap-save FFT convolution with per-frequency batched GEMMs.

    ``budget``: bytes of temporary buffers per call (see the module notes); ``workers``:
    threads for the transforms (``None``: the cores this process may run on).
    """

    capabilities = Capabilities(stride=False, error_factor=ERROR_FACTOR,
                                error_spread=ERROR_SPREAD)

    def __init__(self, budget: int = DEFAULT_BUDGET, workers: int | None = None) -> None:
        self.budget = budget
        self.workers = workers

    # --- the three operations -------------------------------------------------------------

    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        """``x: (N, C, H, W)``, ``weight: (Cout, C/G, kh, kw)`` -> ``y: (N, Cout, Ho, Wo)``."""
        if not (_finite(x) and _finite(weight)):
            return _exact.forward(x, weight, geom)
        pt, _, pl, _ = geom.padding
        kernel = _dilated(weight, geom)[:, :, ::-1, ::-1]  # correlation = convolution, flipped
        g, cog, cg = geom.groups, geom.out_channels // geom.groups, geom.weight_shape[1]
        # (kh, kw, G, Cog, Cg): out channels = G*Cog, in channels per group Cg
        k = kernel.reshape(g, cog, cg, *kernel.shape[2:]).transpose(3, 4, 0, 1, 2)
        return self._convolve(x, k, (pt, pl), geom.out_size, geom)

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``grad_output: (N, Cout, Ho, Wo)``, ``weight`` -> ``grad_x: (N, C, H, W)``."""
        if not (_finite(grad_output) and _finite(weight)):
            return _exact.backward_input(grad_output, weight, geom)
        khe, kwe = _dilated_size(geom)
        pt, _, pl, _ = geom.padding
        kernel = _dilated(weight, geom)
        g, cog, cg = geom.groups, geom.out_channels // geom.groups, geom.weight_shape[1]
        # (kh, kw, G, Cg, Cog): the transposed kernel, out channels = C, in channels per group Cog
        k = kernel.reshape(g, cog, cg, khe, kwe).transpose(3, 4, 0, 2, 1)
        return self._convolve(grad_output, k, (khe - 1 - pt, kwe - 1 - pl), geom.in_size, geom)

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``x: (N, C, H, W)``, ``grad_output: (N, Cout, Ho, Wo)`` -> ``(Cout, C/G, kh, kw)``."""
        if not (_finite(x) and _finite(grad_output)):
            return _exact.backward_weight(x, grad_output, geom)
        return self._correlate_weight(x, grad_output, geom)

    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        """The FFT path's buffers or, for non-finite operands, the exact fallback's."""
        return max(fft_workspace_bytes(geom, method, self.budget),
                   _exact.workspace_bytes(geom, method))

    # --- the engine -----------------------------------------------------------------------

    def _convolve(
        self,
        src: np.ndarray,
        kernel: np.ndarray,
        shift: tuple[int, int],
        out_size: tuple[int, int],
        geom: ConvGeometry,
    ) -> np.ndarray:
        """``out[n, o, i, j] = sum_{c,a,b} V[n, c, i + a, j + b] * kernel[kh-1-a, kw-1-b, o, c]``.

        ``src: (N, Cin, Hs, Ws)``; ``V`` is ``src`` shifted down/right by ``shift`` (rows and
        columns, negative: up/left) in a zero plane; ``kernel: (kh, kw, G, Out/G, Cin/G)``;
        the result ``(N, Out, *out_size)`` in ``geom.dtype``.
        """
        kh, kw, g, og, ig = kernel.shape
        if ig == 1:
            return self._convolve_depthwise(src, kernel, shift, out_size, geom)
        n = src.shape[0]
        tiling = plan(out_size, (kh, kw), n, ig * g, og * g, ig, og, geom.dtype.itemsize,
                      self.budget)
        ws = self._workers()
        spec = _kernel_spectrum(kernel, tiling, ws)  # (F, G, 2*og, ig) real, or (F, G, og) cplx
        out = np.empty((n, og * g, *out_size), geom.dtype)
        for part in _chunks(n, tiling, ig * g, og * g, geom.dtype.itemsize, self.budget):
            tiles = _gather(src[part], shift, tiling)  # (Th, Tw, Cin, b, nh, nw)
            b = tiles.shape[3]
            xs = sfft.rfft2(tiles, axes=(0, 1), workers=ws)  # (Th, Tw', Cin, b, nh, nw)
            del tiles
            xs = xs.reshape(tiling.freqs, g, ig, b * tiling.tiles)
            ys = _spectral_product(spec, xs, og)  # (F, G, og, bP), maybe a strided view
            del xs
            ys = ys.reshape(tiling.Th, tiling.Tw // 2 + 1, g, og, b, tiling.nh, tiling.nw)
            _scatter(ys, out[part], (kh, kw), tiling, ws)
        return out

    def _convolve_depthwise(
        self,
        src: np.ndarray,
        kernel: np.ndarray,
        shift: tuple[int, int],
        out_size: tuple[int, int],
        geom: ConvGeometry,
    ) -> np.ndarray:
        """:meth:`_convolve` with one input channel per group: spectra stay in the arrays'
        own ``(N, C, tiles, Th, Tw//2+1)`` layout and multiply elementwise."""
        kh, kw, g, og, _ = kernel.shape
        n = src.shape[0]
        tiling = plan(out_size, (kh, kw), n, g, og * g, 1, og, geom.dtype.itemsize,
                      self.budget)
        ws = self._workers()
        spec = _trailing_spectrum(kernel[..., 0].transpose(2, 3, 0, 1), tiling, ws)
        spec = spec[:, :, None, None]  # (G, og, 1, 1, Th, Tw')
        out = np.empty((n, og * g, *out_size), geom.dtype)
        for part in _chunks(n, tiling, g, og * g, geom.dtype.itemsize, self.budget):
            tiles = _gather(src[part], shift, tiling, leading=False)  # (b, G, nh, nw, Th, Tw)
            xs = sfft.rfft2(tiles, workers=ws)
            del tiles
            ys = xs[:, :, None] * spec  # (b, G, og, nh, nw, Th, Tw')
            del xs
            rows = sfft.ifft(ys, axis=-2, overwrite_x=True, workers=ws)
            cols = rows[..., kh - 1:kh - 1 + tiling.th, :]
            planes = sfft.irfft(cols, n=tiling.Tw, axis=-1, workers=ws)
            valid = planes[..., kw - 1:kw - 1 + tiling.tw]  # (b, G, og, nh, nw, th, tw)
            _place(valid.transpose(0, 1, 2, 3, 5, 4, 6), out[part], tiling)
        return out

    def _correlate_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``grad_w[o, c, a, b] = sum_{n,i,j} gy[n, o, i, j] * xp[n, c, i + a*dh, j + b*dw]``."""
        khe, kwe = _dilated_size(geom)
        (dh, dw), (pt, _, pl, _) = geom.dilation, geom.padding
        g, cog, cg = geom.groups, geom.out_channels // geom.groups, geom.weight_shape[1]
        n = geom.batch
        if cg == 1:
            return self._correlate_weight_depthwise(x, grad_output, geom)
        tiling = plan(geom.out_size, (khe, kwe), n, geom.in_channels, geom.out_channels, cg,
                      cog, geom.dtype.itemsize, self.budget)
        ws = self._workers()
        acc = None
        for part in _chunks(n, tiling, geom.in_channels, geom.out_channels,
                            geom.dtype.itemsize, self.budget):
            tiles = _gather(x[part], (pt, pl), tiling)  # (Th, Tw, C, b, nh, nw)
            b = tiles.shape[3]
            xs = sfft.rfft2(tiles, axes=(0, 1), workers=ws).reshape(
                tiling.freqs, g, cg, b * tiling.tiles)
            del tiles
            gtiles = _gather(grad_output[part], (0, 0), tiling, size=(tiling.th, tiling.tw))
            gs = sfft.rfft2(gtiles, s=(tiling.Th, tiling.Tw), axes=(0, 1), workers=ws).reshape(
                tiling.freqs, g, cog, b * tiling.tiles)
            del gtiles
            part_sum = _cross_product(gs, xs)  # (F, G, cog, cg): sum conj(gy) * x over bP
            acc = part_sum if acc is None else np.add(acc, part_sum, out=acc)
        spectrum = acc.reshape(tiling.Th, tiling.Tw // 2 + 1, geom.out_channels, cg)
        # Only the kernel's rows are wanted: inverse along axis 0, then the kept rows' real
        # inverse along axis 1.
        rows = sfft.ifft(spectrum, axis=0, overwrite_x=True, workers=ws)[:khe:dh]
        full = sfft.irfft(rows, n=tiling.Tw, axis=1, workers=ws)
        grad_w = full[:, :kwe:dw].transpose(2, 3, 0, 1)  # (Cout, cg, kh, kw)
        return np.ascontiguousarray(grad_w, dtype=geom.dtype)

    def _correlate_weight_depthwise(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """:meth:`_correlate_weight` with one input channel per group, elementwise."""
        khe, kwe = _dilated_size(geom)
        (dh, dw), (pt, _, pl, _) = geom.dilation, geom.padding
        g, cog = geom.groups, geom.out_channels // geom.groups
        tiling = plan(geom.out_size, (khe, kwe), geom.batch, geom.in_channels,
                      geom.out_channels, 1, cog, geom.dtype.itemsize, self.budget)
        ws = self._workers()
        acc = None
        for part in _chunks(geom.batch, tiling, geom.in_channels, geom.out_channels,
                            geom.dtype.itemsize, self.budget):
            xs = sfft.rfft2(_gather(x[part], (pt, pl), tiling, leading=False), workers=ws)
            gtiles = _gather(grad_output[part], (0, 0), tiling, size=(tiling.th, tiling.tw),
                             leading=False)
            gs = sfft.rfft2(gtiles, s=(tiling.Th, tiling.Tw), workers=ws)
            b = gs.shape[0]
            gs = gs.reshape(b, g, cog, *gs.shape[2:])  # (b, G, og, nh, nw, Th, Tw')
            np.conjugate(gs, out=gs)
            gs *= xs[:, :, None]
            part_sum = gs.sum(axis=(0, 3, 4))  # (G, og, Th, Tw')
            acc = part_sum if acc is None else np.add(acc, part_sum, out=acc)
        rows = sfft.ifft(acc, axis=-2, overwrite_x=True, workers=ws)[..., :khe:dh, :]
        full = sfft.irfft(rows, n=tiling.Tw, axis=-1, workers=ws)[..., :kwe:dw]
        return np.ascontiguousarray(full.reshape(geom.weight_shape), dtype=geom.dtype)

    def _workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return _usable_cores()


# --- cost model and tiling ----------------------------------------------------------------

#: Kernel areas (dilated ``kh*kw``) from which FFT beats the best exact backend, measured on
#: this project's 2-core machine (see :func:`fft_worth_it`): GEMM-shaped layers (8 or more
#: input channels per group) and depthwise / few-channel layers.
DENSE_MIN_AREA = 25
DEPTHWISE_MIN_AREA = 15 * 15


def fft_worth_it(geom: ConvGeometry) -> bool:
    """Whether the fft backend is expected to beat the best exact backend on ``geom`` (all
    three operations), for ``auto``'s rules mode. A pure function of the geometry.

    Measured (float32, 2 threads, a busy shared machine: fft time / best of
    ``im2col-strided`` and ``numba``, best of 3 interleaved calls; forward, input gradient,
    weight gradient):

    ========  ==========================  ===============================================
    kernel    dense 8x64x28x28, 64->64     depthwise 8x128x56x56
    ========  ==========================  ===============================================
    3x3       1.43, 0.32, 63 (lose)        6.0, 5.3, 17 (lose)
    5x5       0.53, 0.38, 0.32             3.7, 6.2, 2.2 (lose)
    7x7       0.30, 0.30, 1.09             2.1, 1.4, 1.3 (lose)
    11x11     0.15, 0.13, 0.45             1.11, 1.22, 1.32 (lose)
    15x15     0.12, 0.18, 0.20             0.66, 0.59, 0.88
    ========  ==========================  ===============================================

    So: stride 1 only; GEMM-shaped layers from a 5x5 (dilated) kernel area on (the 7x7
    weight gradient's 1.09 was within this machine's noise), depthwise and few-channel
    layers from 15x15 on.
    """
    if geom.stride != (1, 1):
        return False
    khe, kwe = _dilated_size(geom)
    dense = geom.weight_shape[1] >= 8
    return khe * kwe >= (DENSE_MIN_AREA if dense else DEPTHWISE_MIN_AREA)



def _smooth_lengths(lo: int, hi: int) -> list[int]:
    """5-smooth lengths (fast for pocketfft) in ``[lo, hi]``, plus ``next_fast_len(hi)``."""
    found = {sfft.next_fast_len(hi, real=True)}
    p2 = 1
    while p2 <= hi:
        p3 = p2
        while p3 <= hi:
            p5 = p3
            while p5 <= hi:
                if p5 >= lo:
                    found.add(p5)
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return sorted(found)


def _axis_options(out: int, k: int) -> list[tuple[int, int, int]]:
    """``(T, t, count)`` overlap-save choices along one axis: ``count`` tiles of ``T`` inputs
    and ``t = T - k + 1`` outputs (the last one may produce fewer)."""
    whole = out + k - 1
    options = []
    for length in _smooth_lengths(max(k + 1, 8), whole):
        t = min(length - k + 1, out)
        options.append((length, t, -(-out // t)))
    return options


@functools.lru_cache(maxsize=512)
def plan(
    out_size: tuple[int, int],
    kernel: tuple[int, int],
    batch: int,
    cin: int,
    cout: int,
    cg: int,
    cog: int,
    itemsize: int,
    budget: int,
) -> Tiling:
    """The cheapest tiling by a flop count: transforms ``2.5 T log2 T`` per real plane (inputs,
    outputs and the ``cout*cg`` kernels) and 8 flops per complex multiply-add of the spectral
    product, among those whose weight spectrum fits in a quarter of ``budget`` (the
    smallest tile if none does). ``out_size``: outputs per image; ``kernel``: dilated size."""
    best, best_cost = None, math.inf
    fallback, fallback_bytes = None, math.inf
    csize = 2 * itemsize
    for th_len, th, nh in _axis_options(out_size[0], kernel[0]):
        for tw_len, tw, nw in _axis_options(out_size[1], kernel[1]):
            tiling = Tiling(th_len, tw_len, th, tw, nh, nw)
            area = th_len * tw_len
            fft = 2.5 * area * math.log2(area)
            tiles = nh * nw
            product = 8 * tiling.freqs * tiles * batch * cout * cg
            cost = fft * (tiles * batch * (cin + cout) + cout * cg) + product
            kernel_bytes = 2 * tiling.freqs * cout * cg * csize
            if kernel_bytes <= budget // 4 and cost < best_cost:
                best, best_cost = tiling, cost
            if kernel_bytes < fallback_bytes:
                fallback, fallback_bytes = tiling, kernel_bytes
    return best if best is not None else fallback  # type: ignore[return-value]


def _per_image_bytes(tiling: Tiling, cin: int, cout: int, itemsize: int) -> int:
    """Buffers of one image in a chunk: tiles and spectra of the inputs and outputs, the real
    GEMM result (twice the output spectrum) and the inverse transform."""
    real = tiling.Th * tiling.Tw * tiling.tiles * itemsize
    spec = tiling.freqs * tiling.tiles * 2 * itemsize
    return (cin + cout) * real + cin * spec + 4 * cout * spec + cout * real


def _chunks(n: int, tiling: Tiling, cin: int, cout: int, itemsize: int, budget: int):
    step = images_per_chunk(_per_image_bytes(tiling, cin, cout, itemsize), budget * 3 // 4)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def fft_workspace_bytes(geom: ConvGeometry, method: str, budget: int = DEFAULT_BUDGET) -> int:
    """Bytes the FFT path of ``method`` allocates for ``geom`` besides its result."""
    khe, kwe = _dilated_size(geom)
    cog, cg = geom.out_channels // geom.groups, geom.weight_shape[1]
    itemsize = geom.dtype.itemsize
    if method == "backward_input":
        sizes = (geom.in_size, geom.out_channels, geom.in_channels, cog, cg)
    else:
        sizes = (geom.out_size, geom.in_channels, geom.out_channels, cg, cog)
    out_size, cin, cout, ig, og = sizes
    tiling = plan(out_size, (khe, kwe), geom.batch, cin, cout, ig, og, itemsize, budget)
    per_image = _per_image_bytes(tiling, cin, cout, itemsize)
    chunk = min(geom.batch, images_per_chunk(per_image, budget * 3 // 4))
    weights = 4 * tiling.freqs * geom.out_channels * cg * 2 * itemsize  # spectrum + GEMM form
    kernel = geom.out_channels * cg * khe * kwe * itemsize
    return chunk * per_image + weights + kernel + (1 << 16)


# --- tiles and spectra --------------------------------------------------------------------


def _gather(
    src: np.ndarray,
    shift: tuple[int, int],
    tiling: Tiling,
    size: tuple[int, int] | None = None,
    leading: bool = True,
) -> np.ndarray:
    """Tiles ``(Th, Tw, C, N, nh, nw)`` of ``V``, ``src: (N, C, Hs, Ws)`` shifted by ``shift``
    in a zero plane: tile ``(i, j)`` holds ``V[i*th : i*th + Th, j*tw : j*tw + Tw]``.
    ``size`` overrides ``(Th, Tw)`` (the weight gradient's output tiles are ``(th, tw)``);
    ``leading=False`` lays them out ``(N, C, nh, nw, Th, Tw)`` (no transposition)."""
    n, c, hs, ws = src.shape
    rows, cols = size or (tiling.Th, tiling.Tw)
    height = (tiling.nh - 1) * tiling.th + rows
    width = (tiling.nw - 1) * tiling.tw + cols
    top, left = shift
    canvas = np.zeros((n, c, height, width), src.dtype)
    r0, r1 = max(0, top), min(height, top + hs)
    c0, c1 = max(0, left), min(width, left + ws)
    if r0 < r1 and c0 < c1:
        canvas[:, :, r0:r1, c0:c1] = src[:, :, r0 - top:r1 - top, c0 - left:c1 - left]
    if not leading and tiling.tiles == 1:
        return canvas.reshape(n, c, 1, 1, rows, cols)
    s_n, s_c, s_h, s_w = canvas.strides
    shape = (n, c, tiling.nh, tiling.nw, rows, cols)
    strides = (s_n, s_c, s_h * tiling.th, s_w * tiling.tw, s_h, s_w)
    if leading:
        shape, strides = _permute(shape, (4, 5, 1, 0, 2, 3)), _permute(strides, (4, 5, 1, 0, 2, 3))
    view = np.lib.stride_tricks.as_strided(canvas, shape=shape, strides=strides,
                                           writeable=False)
    return np.ascontiguousarray(view)


def _permute(values: tuple[int, ...], order: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(values[i] for i in order)


def _kernel_spectrum(kernel: np.ndarray, tiling: Tiling, workers: int) -> np.ndarray:
    """``kernel: (kh, kw, G, og, ig)`` -> its spectrum in the form :func:`_spectral_product`
    takes: ``(F, G, 2*og, ig)`` real ``[Re; Im]`` blocks, or ``(F, G, og)`` complex if
    ``ig == 1`` (depthwise)."""
    g, og, ig = kernel.shape[2:]
    # Only the kernel's kh rows are non-zero: transform them along the rows first.
    rows = sfft.rfft(kernel, n=tiling.Tw, axis=1, workers=workers)
    spec = sfft.fft(rows, n=tiling.Th, axis=0, overwrite_x=True, workers=workers)
    spec = spec.reshape(tiling.freqs, g, og, ig)
    if ig == 1:
        return np.ascontiguousarray(spec[..., 0])
    blocks = np.empty((tiling.freqs, g, 2, og, ig), kernel.dtype)
    parts = spec.view(kernel.dtype).reshape(tiling.freqs, g, og, ig, 2)
    np.copyto(blocks, parts.transpose(0, 1, 4, 2, 3))  # one pass: Re and Im blocks
    return blocks.reshape(tiling.freqs, g, 2 * og, ig)


def _trailing_spectrum(kernel: np.ndarray, tiling: Tiling, workers: int) -> np.ndarray:
    """``kernel: (..., kh, kw)`` -> its ``(..., Th, Tw//2+1)`` spectrum (rows first: only the
    kernel's ``kh`` rows are non-zero)."""
    rows = sfft.rfft(kernel, n=tiling.Tw, axis=-1, workers=workers)
    return sfft.fft(rows, n=tiling.Th, axis=-2, overwrite_x=True, workers=workers)


def _spectral_product(kernel: np.ndarray, xs: np.ndarray, og: int) -> np.ndarray:
    """``sum_c K[f, g, o, c] * X[f, g, c, p]`` -> ``(F, G, og, P)`` complex.

    ``kernel`` as :func:`_kernel_spectrum` returns it; ``xs: (F, G, ig, P)`` complex.
    """
    if kernel.ndim == 3:  # depthwise: one input channel per group
        return kernel[..., None] * xs  # (F, G, og, 1) * (F, G, 1, P)
    real = xs.view(kernel.dtype)  # (F, G, ig, 2P): Re, Im interleaved
    m = np.matmul(kernel, real)  # (F, G, 2*og, 2P) = [Wr @ X; Wi @ X]
    m = m.view(xs.dtype)  # (F, G, 2*og, P) complex
    out = m[:, :, :og]
    wi_x = m[:, :, og:]
    # W @ X = Wr@X + i * Wi@X
    out.real -= wi_x.imag
    out.imag += wi_x.real
    return out


def _cross_product(gs: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``sum_p conj(GY[f, g, o, p]) * X[f, g, c, p]`` -> ``(F, G, og, ig)`` complex.

    As real GEMMs on the float views: ``Re = GY . X`` and ``Im = (i*GY) . X`` (dot products
    over ``p`` with real and imaginary parts interleaved)."""
    f, g, og, p = gs.shape
    stacked = np.empty((f, g, 2 * og, p), gs.dtype)
    stacked[:, :, :og] = gs
    np.multiply(gs, 1j, out=stacked[:, :, og:])
    real_dtype = gs.real.dtype
    m = np.matmul(stacked.view(real_dtype), xs.view(real_dtype).swapaxes(-1, -2))
    ig = xs.shape[2]
    out = np.empty((f, g, og, ig, 2), real_dtype)
    np.copyto(out, m.reshape(f, g, 2, og, ig).transpose(0, 1, 3, 4, 2))  # Re, Im interleaved
    return out.view(gs.dtype).reshape(f, g, og, ig)


def _scatter(
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
    _place(valid.transpose(4, 2, 3, 5, 0, 6, 1), out, tiling)


def _place(blocks: np.ndarray, out: np.ndarray, tiling: Tiling) -> None:
    """Write tiles ``blocks: (N, G, og, nh, th, nw, tw)`` into ``out: (N, G*og, Ho, Wo)``
    (the last row and column of tiles may reach past the output: cropped)."""
    ho, wo = out.shape[2:]
    full_h, full_w = tiling.nh * tiling.th, tiling.nw * tiling.tw
    if (full_h, full_w) == (ho, wo):
        target = out.reshape(blocks.shape)
        assert np.shares_memory(target, out)
        np.copyto(target, blocks)
        return
    whole = np.empty(blocks.shape, out.dtype)
    np.copyto(whole, blocks)
    out[...] = whole.reshape(*out.shape[:2], full_h, full_w)[:, :, :ho, :wo]


# --- small helpers ------------------------------------------------------------------------


def _finite(a: np.ndarray) -> bool:
    """Whether ``a`` holds no NaN/Inf (one summation pass; an overflowing sum of finite
    values also says no, which only sends the call to the exact path)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(a.sum()))


def _dilated_size(geom: ConvGeometry) -> tuple[int, int]:
    (kh, kw), (dh, dw) = geom.kernel_size, geom.dilation
    return dh * (kh - 1) + 1, dw * (kw - 1) + 1


def _dilated(weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``weight: (Cout, Cg, kh, kw)`` with zeros between taps: ``(Cout, Cg, khe, kwe)``."""
    if geom.dilation == (1, 1):
        return weight
    (dh, dw) = geom.dilation
    out = np.zeros((*weight.shape[:2], *_dilated_size(geom)), weight.dtype)
    out[:, :, ::dh, ::dw] = weight
    return out


@functools.lru_cache(maxsize=1)
def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
