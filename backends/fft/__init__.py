"""Convolution by FFT (``scipy.fft``): the cost hardly depends on the kernel size.

All three operations are stride-1 convolutions computed tile by tile (overlap-save; an
image in one tile takes the shortest circular length that leaves its outputs unwrapped,
33 instead of 40 for 28x28 images and 11x11 kernels, which lets one tile beat four):

* forward: ``y = xp (*) w``, the cross-correlation of the padded input with the kernel;
* input gradient: ``grad_x``, the full convolution of ``grad_output`` with the kernel, cropped
  to the input (the same engine, fed ``grad_output`` shifted by ``k-1-p`` and the unflipped,
  transposed kernel);
* weight gradient: the correlation of the padded input with ``grad_output``, summed over the
  images and tiles inside the spectral GEMM.

Dilation uses the zero-inserted kernel ``(dh*(kh-1)+1, dw*(kw-1)+1)`` (supported, but the FFT
pays for the dilated extent while direct methods pay for the taps, so
:func:`fft_worth_it` counts taps). Stride > 1 is declared unsupported: an FFT computes every
stride-1 output and keeps 1 in ``sh*sw``, which moves the crossover from 5x5 to about 10x10
taps at stride 2 (not measured: no common layer has such a kernel with stride 2).

**Layout.** Tiles are gathered into ``(Th, Tw, C, B*P)`` real arrays (``P`` tiles per image)
and transformed over the two leading axes, so a spectrum is ``(Th, Tw//2+1, C, B*P)``: each
frequency is one small GEMM over channels, and those of one column frequency are one batched
``np.matmul``. OpenBLAS's complex GEMM is slow on such small matrices, so each complex
product ``W @ X`` runs as real GEMMs on the float view of ``X``, ``Wr@X`` and ``Wi@X``, and
``W@X = Wr@X + i*(Wi@X)``. The kernel's spectrum is computed by DFT GEMMs over the kernel's
own rows and columns (not FFTs of mostly zero tiles), the columns' one column frequency at a
time, in cache, as the product needs it; the weight gradient's spectrum is
inverse-transformed the same way into the kernel's taps only. Depthwise layers (one input
channel per group) multiply elementwise instead (``_depthwise``).

**Precision.** float32 is transformed in complex64, float64 in complex128. FFT rounding
spreads over a whole tile (about ``eps * log2(Th*Tw) * norms``), so the error of an output is
not proportional to its own direct-sum magnitude: the backend declares
``Capabilities.error_factor`` and ``error_spread`` (see ``docs/fft.md`` for the measurements
behind them).

**Non-finite values.** An FFT spreads one NaN or Inf over every output of its tile, which no
direct method does. Each call checks its operands (one summation pass) and computes calls
with NaN or Inf exactly with the ``numba`` backend (imported on the first such call; it needs
no column buffer), so NaN/Inf land where the other backends put them.

**Memory.** The tile size is chosen by a cost model of time among lengths with no prime
factor above 11 (``_plan.LENGTH_FACTORS``), bounded so the weight spectrum (its rows' DFT
and a block per product thread) fits in a quarter of :attr:`FftBackend.budget` and a row of
one image's tiles in the rest; the batch is processed in chunks whose tiles and spectra fit
in the rest, and an image too large for that in bands of tile rows.
:meth:`FftBackend.workspace_bytes` declares the largest unit's buffers.

**Kept buffers and threads.** Each backend instance keeps its work buffers between calls,
per thread, up to a quarter of the budget (``convkit_backends._buffers``; ``retained_bytes``
says how much): fresh buffers are fresh pages, and their page faults were 10 of 26 ms of an
11x11 forward pass. The per-frequency GEMMs (too small for BLAS's own threads) and the tile copies
run in ``workers`` threads of the backend's own (:mod:`._workers`). Every call runs with BLAS on
one thread, even its few larger GEMMs (the kernel's rows' DFT): after a threaded call
OpenBLAS's threads spin, about 0.1 s unless ``import convkit`` came before numpy's
(:mod:`convkit.idle_threads`), on the cores the workers need.
"""

from __future__ import annotations

import functools
import os

import numpy as np

try:
    import scipy.fft as sfft
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the fft backend needs scipy (a dependency of convkit), which is not installed: "
        "pip install scipy"
    ) from exc

from convkit.backend import Capabilities, ConvBackend
from convkit.geometry import ConvGeometry
from convkit.parallelism import thread_limit
from convkit_backends._blas import one_blas_thread
from convkit_backends._buffers import Buffers
from convkit_backends._nonfinite import all_finite
from convkit_backends._workspace import padded_bytes
from convkit_backends.fft._depthwise import convolve_depthwise, correlate_weight_depthwise
from convkit_backends.fft._plan import (
    DEFAULT_BUDGET,
    Convolution,
    Tiling,
    band,
    chunks,
    dilated_size,
    fft_ns,
    fft_workspace_bytes,
    fft_worth_it,
    layer_tiling,
    layer_units,
    plan,
    product_threads,
)
from convkit_backends.fft._spectra import (
    KernelSpectrum,
    WeightGradient,
    gather,
    scatter,
    spectral_product,
)

__all__ = ["DEFAULT_BUDGET", "ERROR_FACTOR", "ERROR_SPREAD", "FftBackend", "Tiling",
           "chunks", "dilated_size", "fft_ns", "fft_workspace_bytes", "fft_worth_it",
           "layer_tiling", "plan"]

#: The declared accuracy (:class:`~convkit.Capabilities`): within ``ERROR_FACTOR`` times the
#: direct-sum bound ``n*eps*sum|terms|`` plus ``ERROR_SPREAD * eps * max(sum|terms|)``. Measured
#: worst cases (docs/fft.md): the spread term alone needs 2.55 (float64) and 1.5 (float32);
#: with a factor of 1 it needs 1.4. Declared with about 3x headroom.
ERROR_FACTOR = 2.0
ERROR_SPREAD = 8.0


@functools.lru_cache(maxsize=1)
def _exact() -> ConvBackend:
    """The exact backend for calls with NaN/Inf operands: ``numba``, which needs no column
    buffer (im2col's columns of a large kernel can be many times the input). Imported on the
    first such call only."""
    from convkit_backends.numba_direct.backend import NumbaBackend

    return NumbaBackend()


class FftBackend(ConvBackend):
    """Overlap-save FFT convolution with per-frequency batched GEMMs.

    ``budget``: bytes of temporary buffers per call (see the module notes), a quarter of
    which it may keep between calls, per thread; ``workers``: threads for the transforms,
    products and copies (``None``: the cores this process may run on).
    """

    description = ("large kernels at stride 1: dense 5x5 and up on batches, depthwise 17x17 and "
                   "up (inexact)")
    capabilities = Capabilities(stride=False, error_factor=ERROR_FACTOR,
                                error_spread=ERROR_SPREAD)

    def __init__(self, budget: int = DEFAULT_BUDGET, workers: int | None = None) -> None:
        self.budget = budget
        self.workers = workers
        self._buffers = Buffers(limit=budget // 4)

    # --- the three operations -------------------------------------------------------------

    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        """``x: (N, C, H, W)``, ``weight: (Cout, C/G, kh, kw)`` -> ``y: (N, Cout, Ho, Wo)``."""
        if not all_finite(x, weight):
            return _exact().forward(x, weight, geom)
        pt, _, pl, _ = geom.padding
        # A correlation is a convolution with the flipped kernel.
        conv = Convolution(x, _dilated(weight, geom), geom.groups, True, False, (pt, pl),
                            geom.out_size, geom.dtype)
        return self._convolve(conv)

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``grad_output: (N, Cout, Ho, Wo)``, ``weight`` -> ``grad_x: (N, C, H, W)``."""
        if not all_finite(grad_output, weight):
            return _exact().backward_input(grad_output, weight, geom)
        khe, kwe = dilated_size(geom)
        pt, _, pl, _ = geom.padding
        shift = (khe - 1 - pt, kwe - 1 - pl)
        # A full convolution with the transposed kernel: out channels C, Cout/G per group in.
        conv = Convolution(grad_output, _dilated(weight, geom), geom.groups, False, True,
                            shift, geom.in_size, geom.dtype)
        return self._convolve(conv)

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``x: (N, C, H, W)``, ``grad_output: (N, Cout, Ho, Wo)`` -> ``(Cout, C/G, kh, kw)``."""
        if not all_finite(x, grad_output):
            return _exact().backward_weight(x, grad_output, geom)
        return self._correlate_weight(x, grad_output, geom)

    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        """The FFT path's buffers or, for non-finite operands, the exact fallback's."""
        return max(fft_workspace_bytes(geom, method, self.budget),
                   padded_bytes(geom, geom.batch))  # numba's padded copy

    def retained_bytes(self) -> int:
        """The work buffers kept between calls, in every thread (``convkit_backends._buffers``)."""
        return self._buffers.kept_bytes()

    def release_retained(self) -> None:
        """Stop keeping the work buffers (see :meth:`retained_bytes`)."""
        self._buffers.release()

    # --- the engine -----------------------------------------------------------------------

    def _convolve(self, conv: Convolution) -> np.ndarray:
        """``conv``'s result, tile by tile: one GEMM over channels per frequency."""
        with one_blas_thread():  # see the module notes: no BLAS threads left spinning
            return self._convolve_tiles(conv)

    def _convolve_tiles(self, conv: Convolution) -> np.ndarray:
        kh, _, g, og, ig = conv.kernel.shape
        if ig == 1:
            return convolve_depthwise(conv, self.budget, self._buffers, self._workers())
        tiling = conv.tiling(self.budget)
        ws = self._workers()
        spec = KernelSpectrum(conv.weight, g, conv.flipped, tiling, self._buffers)
        threads = product_threads(tiling, kh, g * og * ig, conv.dtype.itemsize, ws, self.budget)
        out = conv.empty_output()
        for unit in conv.units(tiling, self.budget):
            part, moved, target = band(tiling, unit, conv.placement(tiling), out)
            tiles = gather(conv.src[unit.images], moved, part, buffers=self._buffers, name="x",
                           workers=ws)
            b = tiles.shape[3]
            xs = sfft.rfft2(tiles, axes=(0, 1), workers=ws)  # (Th, Tw', Cin, b, nh, nw)
            del tiles
            xs = xs.reshape(part.Th, part.Tw // 2 + 1, g, ig, b * part.tiles)
            ys = spectral_product(spec, xs, conv.transposed, self._buffers, threads)
            del xs
            ys = ys.reshape(part.Th, part.Tw // 2 + 1, g, og, b, part.nh, part.nw)
            scatter(ys, target, part, ws)
        return out

    def _correlate_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``grad_w[o, c, a, b] = sum_{n,i,j} gy[n, o, i, j] * xp[n, c, i + a*dh, j + b*dw]``."""
        with one_blas_thread():  # see the module notes: no BLAS threads left spinning
            return self._correlate_weight_tiles(x, grad_output, geom)

    def _correlate_weight_tiles(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        khe, kwe = dilated_size(geom)
        (dh, dw), (pt, _, pl, _) = geom.dilation, geom.padding
        g, cog, cg = geom.groups, geom.out_channels // geom.groups, geom.weight_shape[1]
        if cg == 1:
            return correlate_weight_depthwise(x, grad_output, geom, self.budget, self._buffers,
                                              self._workers())
        tiling = layer_tiling(geom, self.budget)
        ws = self._workers()
        threads = product_threads(tiling, khe, geom.out_channels * cg, geom.dtype.itemsize, ws,
                                  self.budget)
        grad = WeightGradient(tiling, range(0, khe, dh), g, cog, cg, geom.dtype,
                              self._buffers, threads)
        for unit in layer_units(geom, tiling, self.budget):
            part, moved, _ = band(tiling, unit, (pt, pl))
            tiles = gather(x[unit.images], moved, part, buffers=self._buffers, name="x",
                           workers=ws)
            b = tiles.shape[3]
            xs = sfft.rfft2(tiles, axes=(0, 1), workers=ws).reshape(
                tiling.Th, tiling.Tw // 2 + 1, g, cg, b * part.tiles)
            del tiles
            gtiles = gather(grad_output[unit.images], (moved[0] - pt, 0), part,
                            size=(tiling.th, tiling.tw), buffers=self._buffers, name="x",
                            workers=ws)
            gs = sfft.rfft2(gtiles, axes=(0, 1), workers=ws).reshape(
                tiling.Th, tiling.Tw // 2 + 1, g, cog, b * part.tiles)
            del gtiles
            grad.add(gs, xs)
        return grad.result(range(0, kwe, dw))

    def _workers(self) -> int:
        """Threads for the transforms: ``workers`` if given, else the limit of
        :func:`convkit.threads` or ``CONVKIT_NUM_THREADS``, else the usable cores."""
        if self.workers is not None:
            return self.workers
        return thread_limit() or _usable_cores()


# --- small helpers ------------------------------------------------------------------------


def _dilated(weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``weight: (Cout, Cg, kh, kw)`` with zeros between taps: ``(Cout, Cg, khe, kwe)``."""
    if geom.dilation == (1, 1):
        return weight
    (dh, dw) = geom.dilation
    out = np.zeros((*weight.shape[:2], *dilated_size(geom)), weight.dtype)
    out[:, :, ::dh, ::dw] = weight
    return out


@functools.lru_cache(maxsize=1)
def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
