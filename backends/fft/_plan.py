"""What the fft backend computes and how it cuts it up: the :class:`Convolution`, its tiles
(chosen by a flops model), the work units that fit the budget (:func:`chunks`,
:func:`band`), the bytes they take, and whether FFT beats the best exact backend at all
(:func:`fft_worth_it`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import scipy.fft as sfft

from convkit.geometry import ConvGeometry
from convkit_backends._common import images_per_chunk

#: Default bytes of temporary buffers per call (spectra, tiles); the weight spectrum may use
#: a quarter of it.
DEFAULT_BUDGET = 256 * 2**20


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



#: GEMM-shaped layers (8 or more input channels per group): the direct sum's flops over
#: the FFT's modelled flops (:func:`fft_flops`) from which FFT beats the best exact backend
#: (see :func:`fft_worth_it`).
DENSE_MIN_RATIO = 3.7
#: Depthwise and few-channel layers: the kernel area (taps) from which it does.
DEPTHWISE_MIN_AREA = 17 * 17


def fft_worth_it(geom: ConvGeometry) -> bool:
    """Whether the fft backend is expected to beat the best exact backend on ``geom`` (all
    three operations), for ``auto``'s rules mode. A pure function of the geometry.

    Stride 1 only: stride 2 costs the FFT 4x relative to the exact backends (it computes
    every stride-1 output), and it is not supported. GEMM-shaped layers: when the direct
    sum's flops (``geom.flops``, which counts taps, not the dilated extent) are at least
    :data:`DENSE_MIN_RATIO` times the FFT's modelled flops (:func:`fft_flops`), which grow
    with the tile and the kernel's spectrum rather than the taps. A tap count alone cannot
    tell: a 5x5 layer of 8 images wins, a 5x5 layer of one 28x28 image loses. Depthwise and
    few-channel layers (an elementwise product, bound by the transforms): from
    :data:`DEPTHWISE_MIN_AREA` taps.

    Measured with ``convkit bench`` (float32, 2 threads, 2 cores; each backend in its own
    processes, medians of 5; fft time / the best of ``im2col-strided`` and ``numba`` for the
    forward pass, input gradient and weight gradient; padding ``k//2``):

    ======================  =====  ==================
    layer (N, C->Cout, HW)  ratio  fft / best exact
    ======================  =====  ==================
    8, 64->64, 28, 3x3      2.5    2.03, 1.87, 2.00
    1, 64->64, 28, 5x5      2.8    1.69, 1.59, 1.48
    1, 64->64, 28, 7x7      3.6    1.00, 1.02, 0.99
    8, 128->128, 14, 5x5    3.8    0.96, 0.87, 0.95
    1, 64->64, 28, 11x11    4.5    0.53, 0.58, 0.55
    8, 64->192, 27, 5x5     5.1    0.81, 0.72, 0.78
    8, 64->64, 28, 5x5      5.3    0.72, 0.73, 0.61
    8, 32->32, 56, 5x5      5.9    0.80, 0.87, 0.65
    1, 128->128, 56, 7x7    6.9    0.43, 0.43, 0.38
    8, 64->64, 28, 7x7      7.7    0.42, 0.45, 0.39
    ======================  =====  ==================

    Depthwise 8x128x56x56, after one-tile images took the shortest circular length: 15x15 1.03,
    1.01, 0.99; 17x17 0.67, 0.81, 0.66; 19x19 0.76, 0.65, 0.61; 23x23 0.46, 0.44, 0.44.
    """
    if geom.stride != (1, 1):
        return False
    kh, kw = geom.kernel_size
    cg = geom.weight_shape[1]
    if cg < 8:
        return kh * kw >= DEPTHWISE_MIN_AREA
    tiling = layer_tiling(geom, DEFAULT_BUDGET)
    return geom.flops >= DENSE_MIN_RATIO * fft_flops(tiling, geom)


def fft_flops(tiling: Tiling, geom: ConvGeometry) -> float:
    """The FFT path's modelled flops for ``geom`` on ``tiling`` (:func:`_modelled_flops`)."""
    return _modelled_flops(tiling, dilated_size(geom), geom.batch, geom.in_channels,
                           geom.out_channels, geom.weight_shape[1])


def _modelled_flops(
    tiling: Tiling, kernel: tuple[int, int], batch: int, cin: int, cout: int, cg: int
) -> float:
    """Real transforms of the input and output tiles (``2.5 T log2 T`` per plane), the
    kernels' spectra and the spectral product (8 flops per complex multiply-add). The spectra
    of ``cout*cg`` kernels of ``kernel`` taps: DFT GEMMs over their rows, then columns; for
    one input channel per group (``cg == 1``, the elementwise path) FFTs of whole tiles.

    Measured on the 8x64x28x28 11x11 layer (in process, interleaved calls, medians of 40):
    this model ranks its tiles 24x24 < 40x24 < 24x40 < 20x40 and so did the forward pass,
    11.4, 11.9, 12.2 and 12.5 ms (a model of transform flops for the kernels too had picked
    24x40)."""
    kh, kw = kernel
    area = tiling.Th * tiling.Tw
    transform = 2.5 * area * math.log2(area)
    kernels = cout * cg
    if cg == 1:
        spectrum = transform * kernels
    else:
        columns = tiling.Tw // 2 + 1
        spectrum = (4 * columns * kw * kh + 8 * tiling.Th * kh * columns) * kernels
    product = 8 * tiling.freqs * tiling.tiles * batch * kernels
    return transform * tiling.tiles * batch * (cin + cout) + spectrum + product


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
    """The cheapest tiling by :func:`_modelled_flops`, among those whose weight spectrum fits
    in a quarter of ``budget`` (the smallest tile if none does). ``out_size``: outputs per
    image; ``kernel``: dilated size; ``cg`` input channels per group (1: the elementwise
    depthwise path)."""
    best, best_cost = None, math.inf
    fallback, fallback_bytes = None, math.inf
    csize = 2 * itemsize
    for th_len, th, nh in _axis_options(out_size[0], kernel[0]):
        for tw_len, tw, nw in _axis_options(out_size[1], kernel[1]):
            tiling = Tiling(th_len, tw_len, th, tw, nh, nw)
            cost = _modelled_flops(tiling, kernel, batch, cin, cout, cg)
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


@dataclass(frozen=True)
class Chunk:
    """A unit of work whose buffers fit the budget: images ``images``, and of each image the
    ``rows`` tile rows from ``first_row`` on (all of them unless one image is too large)."""

    images: slice
    first_row: int
    rows: int


def chunks(
    n: int, tiling: Tiling, cin: int, cout: int, itemsize: int, budget: int
) -> Iterator[Chunk]:
    """Work units whose buffers fit in three quarters of ``budget``: several images each, or
    bands of tile rows of one image when a whole image does not fit."""
    per_image = _per_image_bytes(tiling, cin, cout, itemsize)
    allowed = budget * 3 // 4
    if per_image <= allowed or tiling.nh == 1:
        step = images_per_chunk(per_image, allowed)
        for start in range(0, n, step):
            yield Chunk(slice(start, min(start + step, n)), 0, tiling.nh)
        return
    rows = _rows_per_band(tiling, per_image, allowed)
    for image in range(n):
        for first in range(0, tiling.nh, rows):
            yield Chunk(slice(image, image + 1), first, min(rows, tiling.nh - first))


def _rows_per_band(tiling: Tiling, per_image: int, allowed: int) -> int:
    return max(1, allowed // max(1, per_image // tiling.nh))


def fft_workspace_bytes(geom: ConvGeometry, method: str, budget: int = DEFAULT_BUDGET) -> int:
    """Bytes the FFT path of ``method`` allocates for ``geom`` besides its result: the largest
    work unit's buffers (see :func:`chunks`), the kernel's spectrum and its GEMM form."""
    khe, kwe = dilated_size(geom)
    cog, cg = geom.out_channels // geom.groups, geom.weight_shape[1]
    itemsize = geom.dtype.itemsize
    if method == "backward_input":
        sizes = (geom.in_size, geom.out_channels, geom.in_channels, cog, cg)
    else:
        sizes = (geom.out_size, geom.in_channels, geom.out_channels, cg, cog)
    out_size, cin, cout, ig, og = sizes
    tiling = plan(out_size, (khe, kwe), geom.batch, cin, cout, ig, og, itemsize, budget)
    per_image = _per_image_bytes(tiling, cin, cout, itemsize)
    allowed = budget * 3 // 4
    if per_image <= allowed or tiling.nh == 1:
        unit = min(geom.batch, images_per_chunk(per_image, allowed)) * per_image
    else:
        unit = _rows_per_band(tiling, per_image, allowed) * (per_image // tiling.nh + 1)
    weights = 4 * tiling.freqs * geom.out_channels * cg * 2 * itemsize  # spectrum + GEMM form
    kernel = geom.out_channels * cg * khe * kwe * itemsize
    return unit + weights + kernel + (1 << 16)


def layer_tiling(geom: ConvGeometry, budget: int) -> Tiling:
    """The tiles :func:`plan` picks for ``geom``'s forward pass, which its weight gradient
    (output tiles correlated with input tiles) shares."""
    return plan(geom.out_size, dilated_size(geom), geom.batch, geom.in_channels,
                geom.out_channels, geom.weight_shape[1], geom.out_channels // geom.groups,
                geom.dtype.itemsize, budget)


def layer_units(geom: ConvGeometry, tiling: Tiling, budget: int) -> Iterator[Chunk]:
    """The work units (:func:`chunks`) of ``geom``'s forward pass or weight gradient."""
    return chunks(geom.batch, tiling, geom.in_channels, geom.out_channels,
                  geom.dtype.itemsize, budget)


def dilated_size(geom: ConvGeometry) -> tuple[int, int]:
    """The zero-inserted kernel's ``(dh*(kh-1)+1, dw*(kw-1)+1)``."""
    (kh, kw), (dh, dw) = geom.kernel_size, geom.dilation
    return dh * (kh - 1) + 1, dw * (kw - 1) + 1


@dataclass(frozen=True)
class Convolution:
    """A stride-1 convolution, as the fft backend's engines take it:
    ``out[n, o, i, j] = sum_{c,a,b} V[n, c, i + a, j + b] * kernel[kh-1-a, kw-1-b, o, c]``.

    ``src: (N, Cin, Hs, Ws)``; ``V`` is ``src`` shifted down/right by ``shift`` (rows and
    columns, negative: up/left) in a zero plane; ``out: (N, Out, *out_size)`` in ``dtype``.
    The kernel is ``weight: (Cout, Cg, kh, kw)`` (a conv2d weight in ``groups`` groups),
    ``flipped`` (the forward pass: a correlation) or ``transposed`` (the input gradient:
    ``Out = G*Cg`` and ``Cin = Cout``); :attr:`kernel` is that view of it.
    """

    src: np.ndarray
    weight: np.ndarray
    groups: int
    flipped: bool
    transposed: bool
    shift: tuple[int, int]
    out_size: tuple[int, int]
    dtype: np.dtype

    @property
    def kernel(self) -> np.ndarray:
        """``(kh, kw, G, Out/G, Cin/G)``, a view of ``weight``."""
        cout, cg, kh, kw = self.weight.shape
        g = self.groups
        weight = self.weight[:, :, ::-1, ::-1] if self.flipped else self.weight
        by_group = weight.reshape(g, cout // g, cg, kh, kw)
        order = (3, 4, 0, 2, 1) if self.transposed else (3, 4, 0, 1, 2)
        return by_group.transpose(order)

    def tiling(self, budget: int) -> Tiling:
        """The tiles :func:`plan` chooses within ``budget``."""
        kh, kw, g, og, ig = self.kernel.shape
        return plan(self.out_size, (kh, kw), self.src.shape[0], ig * g, og * g, ig, og,
                    self.dtype.itemsize, budget)

    def units(self, tiling: Tiling, budget: int) -> Iterator[Chunk]:
        """The work units (:func:`chunks`) within ``budget``."""
        _, _, g, og, ig = self.kernel.shape
        return chunks(self.src.shape[0], tiling, ig * g, og * g, self.dtype.itemsize, budget)

    def empty_output(self) -> np.ndarray:
        """``out: (N, Out, *out_size)``, uninitialised."""
        _, _, g, og, _ = self.kernel.shape
        return np.empty((self.src.shape[0], og * g, *self.out_size), self.dtype)


def band(
    tiling: Tiling, unit: Chunk, shift: tuple[int, int], out: np.ndarray | None = None
) -> tuple[Tiling, tuple[int, int], np.ndarray | None]:
    """The tiling, source shift and output rows (of ``out: (N, O, Ho, Wo)``) of one work
    unit: its images, and its band of tile rows starting at output row ``first_row * th``."""
    r0 = unit.first_row * tiling.th
    part = replace(tiling, nh=unit.rows)
    moved = (shift[0] - r0, shift[1])
    if out is None:
        return part, moved, None
    return part, moved, out[unit.images, :, r0:r0 + unit.rows * tiling.th]
