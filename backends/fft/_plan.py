"""What the fft backend computes and how it cuts it up: the :class:`Convolution`, its tiles
(chosen by a model of time), the work units that fit the budget (:func:`chunks`,
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
    outputs, a tile's last ``th`` rows and ``tw`` columns. Along an axis of several tiles
    ``T = t + k - 1`` (``k`` the dilated kernel size); an axis of one tile may be shorter
    than the linear convolution, a circular one whose wanted outputs no wrapped-around term
    reaches (see :func:`one_tile_span` and :func:`placement`)."""

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



#: GEMM-shaped layers (8 or more input channels per group): the direct sum's flops over the
#: FFT's modelled time (:func:`fft_ns`), in GFLOP/s, from which FFT beats the best exact
#: backend (see :func:`fft_worth_it`), and the fewest taps.
DENSE_MIN_GFLOPS = 160.0
DENSE_MIN_AREA = 5 * 5
#: Depthwise and few-channel layers: the kernel area (taps) from which it does.
DEPTHWISE_MIN_AREA = 17 * 17


def fft_worth_it(geom: ConvGeometry) -> bool:
    """Whether the fft backend is expected to beat the best exact backend on ``geom`` (over
    its three operations): a pure function of the geometry, for a rule to use (``auto``'s own
    rule picks exact backends only; under the ``'fast'`` policy it measures ``fft``).

    Stride 1 only: stride 2 costs the FFT 4x relative to the exact backends (it computes
    every stride-1 output), and it is not supported. GEMM-shaped layers: from 5x5 taps
    (:data:`DENSE_MIN_AREA`; 3x3 layers of many channels score high, but the exact backends
    run them far faster), when the direct sum's flops (``geom.flops``, which counts taps,
    not the dilated extent) over the FFT's modelled time (:func:`fft_ns`) reach
    :data:`DENSE_MIN_GFLOPS`. A tap count alone cannot tell: the FFT's time grows with the
    tiles and the kernel's spectrum, not the taps. Depthwise and few-channel layers (an
    elementwise product, bound by the transforms): from :data:`DEPTHWISE_MIN_AREA` taps.

    Measured with ``convkit bench`` on 14 dense layers (the table in ``docs/fft.md``): every
    layer scoring 169 GFLOP/s or more ran faster on fft than on the best of im2col-strided
    and numba in all three operations (0.28-0.76x), but for one image of 64 channels at 28x28
    with 7x7 kernels (188: 1.19, 0.94, 0.72); every layer scoring 147 or less ran slower in
    at least two (to 2.3x). Depthwise 8x128x56x56: 15x15 a tie, 17x17 and up faster. (Since
    numba's forward pass holds two output rows in registers, fft is faster there over the
    three operations together from 17x17 on, but numba's forward pass and input gradient are
    faster up to about 25x25: ``docs/fft.md``.)
    """
    if geom.stride != (1, 1):
        return False
    kh, kw = geom.kernel_size
    cg = geom.weight_shape[1]
    if cg < 8:
        return kh * kw >= DEPTHWISE_MIN_AREA
    if kh * kw < DENSE_MIN_AREA:
        return False
    tiling = layer_tiling(geom, DEFAULT_BUDGET)
    return geom.flops >= DENSE_MIN_GFLOPS * fft_ns(tiling, geom)


def fft_ns(tiling: Tiling, geom: ConvGeometry) -> float:
    """The FFT path's modelled time for ``geom`` on ``tiling``, in nanoseconds
    (:func:`_modelled_ns`)."""
    return _modelled_ns(tiling, dilated_size(geom), geom.batch, geom.in_channels,
                        geom.out_channels, geom.weight_shape[1])


#: The cost model's constants: nanoseconds (two threads of this kind of machine, float32) per
#: tile point of one plane, for all the passes over it (gather, transform, inverse transform,
#: placing); per complex multiply-add of the spectral product (real GEMMs); per
#: ``(u, a, v, kernel)`` of the kernel spectrum's column DFT (a GEMM over ``2*kh``, slower);
#: per ``(v, a, b, kernel)`` of its row DFT (bound by writing its result). Fitted to stage
#: timings of the 8x64x28x28 11x11 forward pass on 36x36, 36x24 and 24x24 tiles.
PASS_NS = 3.2
PRODUCT_NS = 0.047
KERNEL_COLUMN_NS = 0.094
KERNEL_ROW_NS = 0.116


def _modelled_ns(
    tiling: Tiling, kernel: tuple[int, int], batch: int, cin: int, cout: int, cg: int
) -> float:
    """The modelled time of one call, in nanoseconds: passes over the input and output tiles,
    the kernels' spectra and the spectral product. The spectra of ``cout*cg`` kernels of
    ``kernel`` taps: DFT GEMMs over their rows, then columns; for one input channel per
    group (``cg == 1``, the elementwise path) transforms of whole tiles, and a product that
    is one more pass.

    Measured on the 8x64x28x28 11x11 layer (in process, interleaved calls, medians of 30,
    forward / input gradient / weight gradient): 36x36 tiles (one per image, circular)
    10.1/10.1/10.3 ms, 36x24 10.7/10.5/11.8, 24x24 11.8/11.3/14.3, and the model says 9.3,
    9.8 and 11.5."""
    kh, kw = kernel
    points = tiling.Th * tiling.Tw * tiling.tiles * batch
    passes = PASS_NS * points * (cin + cout)
    kernels = cout * cg
    columns = tiling.Tw // 2 + 1
    if cg == 1:
        spectrum = PASS_NS * tiling.Th * tiling.Tw * kernels
        product = PASS_NS * tiling.freqs * tiling.tiles * batch * kernels
    else:
        spectrum = (KERNEL_ROW_NS * columns * kw * kh
                    + KERNEL_COLUMN_NS * tiling.Th * kh * columns) * kernels
        product = PRODUCT_NS * tiling.freqs * tiling.tiles * batch * kernels
    return passes + spectrum + product


#: Prime factors of the transform lengths considered: pocketfft has passes of its own for
#: each (its real transforms run 7 and 11 through a generic one, still fast at these sizes).
#: 11 lets a 28x28 image with an 11x11 kernel take 33x33 circular tiles: 7-10% faster than
#: 36x36 in all three operations (in process, interleaved calls, medians of 25).
LENGTH_FACTORS = (2, 3, 5, 7, 11)


def _smooth_lengths(lo: int, hi: int) -> list[int]:
    """Lengths in ``[lo, hi]`` with no prime factor beyond :data:`LENGTH_FACTORS`, plus the
    next one from ``hi`` on."""
    found = {1}
    for factor in LENGTH_FACTORS:
        found |= {n * factor**e for n in found for e in range(1, 64) if n * factor**e <= hi}
    candidates = sorted(n for n in found if n >= lo)
    return [*candidates, sfft.next_fast_len(hi)] if hi not in candidates else candidates


def _axis_options(out: int, k: int, span: int) -> list[tuple[int, int, int]]:
    """``(T, t, count)`` overlap-save choices along one axis: one tile of ``span`` or more
    inputs, or ``count`` tiles of ``T`` inputs and ``t = T - k + 1`` outputs (the last one
    may produce fewer)."""
    options = []
    for length in _smooth_lengths(max(k + 1, 8), span):
        t = out if length >= span else length - k + 1
        options.append((length, t, -(-out // t)))
    return options


def one_tile_span(size: int, k: int, shift: int, out: int) -> int:
    """The shortest tile along an axis that holds a whole image: ``size`` source samples at
    ``shift`` (of a zero plane), convolved with ``k`` taps into ``out`` outputs.

    The linear convolution needs ``out + k - 1``. A circular one of length ``L`` needs less:
    its bin ``j mod L`` adds the linear result's ``j + m*L`` over all ``m``, and the wanted
    outputs (linear ``offset .. offset + out`` of the unshifted source,
    ``offset = k - 1 - shift``) stay free of wrapped-around terms when
    ``L >= offset + out`` and ``L >= size + k - 1 - offset``: for a padded image, the image
    plus its larger padding rather than both paddings."""
    return min(circular_span(size, k, shift, out), out + k - 1)


def circular_span(size: int, k: int, shift: int, out: int) -> int:
    """The shortest circular length that holds the whole source unshifted and leaves its
    wanted outputs unwrapped (see :func:`one_tile_span`, which may take less by cutting off
    source samples no output reads)."""
    offset = k - 1 - shift
    return max(offset + out, size + k - 1 - offset, out, size, k)


def placement(tiling: Tiling, kernel: tuple[int, int], shift: tuple[int, int]) -> tuple[int, int]:
    """Where the source goes in the tiles' plane: ``shift``, moved by ``T - t - (k - 1)`` so
    that each tile's outputs are its last ``t`` (non-zero only along an axis of one tile:
    up for a circular tile, down for a tile longer than the linear convolution)."""
    return (shift[0] + tiling.Th - tiling.th - (kernel[0] - 1),
            shift[1] + tiling.Tw - tiling.tw - (kernel[1] - 1))


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
    span: tuple[int, int] | None = None,
) -> Tiling:
    """The fastest tiling by :func:`_modelled_ns`, among those whose weight spectrum fits
    in a quarter of ``budget`` and one row of tiles of one image in the rest (see
    :func:`chunks`; the smallest spectrum if none does). ``out_size``: outputs per
    image; ``kernel``: dilated size; ``cg`` input channels per group (1: the elementwise
    depthwise path); ``span``: the shortest tile holding a whole image along each axis
    (:func:`one_tile_span`; default: the linear convolution's ``out + k - 1``)."""
    if span is None:
        span = (out_size[0] + kernel[0] - 1, out_size[1] + kernel[1] - 1)
    best, best_cost = None, math.inf
    fallback, fallback_bytes = None, math.inf
    for th_len, th, nh in _axis_options(out_size[0], kernel[0], span[0]):
        for tw_len, tw, nw in _axis_options(out_size[1], kernel[1], span[1]):
            tiling = Tiling(th_len, tw_len, th, tw, nh, nw)
            cost = _modelled_ns(tiling, kernel, batch, cin, cout, cg)
            kernel_bytes = _kernel_bytes(tiling, kernel[0], cout * cg, cg, itemsize)
            tile_row = _per_image_bytes(tiling, cin, cout, itemsize) // nh
            fits = kernel_bytes <= budget // 4 and tile_row <= budget * 3 // 4
            if fits and cost < best_cost:
                best, best_cost = tiling, cost
            if kernel_bytes < fallback_bytes:
                fallback, fallback_bytes = tiling, kernel_bytes
    return best if best is not None else fallback  # type: ignore[return-value]


def _kernel_bytes(
    tiling: Tiling, kh: int, kernels: int, cg: int, itemsize: int, threads: int = 1
) -> int:
    """The kernels' spectra: for GEMM-shaped layers their rows' DFT ``(kh, 2, V, M)`` and one
    ``(Th, 2, M)`` block per thread of the product (``KernelSpectrum``; the weight gradient's
    sums take as much); for the elementwise path, whole complex spectra."""
    if cg == 1:
        return 2 * tiling.freqs * kernels * 2 * itemsize
    return (_rows_bytes(tiling, kh, kernels, itemsize)
            + threads * _block_bytes(tiling, kernels, itemsize))


def _rows_bytes(tiling: Tiling, kh: int, kernels: int, itemsize: int) -> int:
    """The kernels' rows' DFT, ``(kh, 2, V, M)``."""
    return kh * 2 * (tiling.Tw // 2 + 1) * kernels * itemsize


def _block_bytes(tiling: Tiling, kernels: int, itemsize: int) -> int:
    """One column frequency's block of the kernels' spectrum, ``(Th, 2, M)``."""
    return tiling.Th * 2 * kernels * itemsize


def product_threads(
    tiling: Tiling, kh: int, kernels: int, itemsize: int, workers: int, budget: int
) -> int:
    """Threads for the spectral product of a GEMM-shaped layer: at most ``workers``, one per
    column frequency, and as many as the kernels' blocks fit in a quarter of ``budget``
    beside the rows' DFT (at least one)."""
    room = budget // 4 - _rows_bytes(tiling, kh, kernels, itemsize)
    fitting = room // _block_bytes(tiling, kernels, itemsize)
    return max(1, min(workers, tiling.Tw // 2 + 1, fitting))


def _per_image_bytes(tiling: Tiling, cin: int, cout: int, itemsize: int) -> int:
    """Buffers of one image in a chunk: tiles and spectra of the inputs and outputs, and the
    product's result with the inverse transforms' (counted as four output spectra)."""
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
    work unit's buffers (see :func:`chunks`), the kernels' spectra (:func:`_kernel_bytes`)
    and the dilated kernel."""
    khe, kwe = dilated_size(geom)
    cog, cg = geom.out_channels // geom.groups, geom.weight_shape[1]
    itemsize = geom.dtype.itemsize
    if method != "backward_input":
        tiling = layer_tiling(geom, budget)
        cin, cout = geom.in_channels, geom.out_channels
    else:  # a convolution of grad_output shifted by k - 1 - p (see FftBackend.backward_input)
        pt, _, pl, _ = geom.padding
        tiling = convolution_tiling(geom.out_size, (khe, kwe), (khe - 1 - pt, kwe - 1 - pl),
                                    geom.in_size, geom.batch, geom.groups, cg, cog, itemsize,
                                    budget)
        cin, cout = geom.out_channels, geom.in_channels
    per_image = _per_image_bytes(tiling, cin, cout, itemsize)
    allowed = budget * 3 // 4
    if per_image <= allowed or tiling.nh == 1:
        unit = min(geom.batch, images_per_chunk(per_image, allowed)) * per_image
    else:
        unit = _rows_per_band(tiling, per_image, allowed) * (per_image // tiling.nh + 1)
    kernels = geom.out_channels * cg
    threads = product_threads(tiling, khe, kernels, itemsize, tiling.Tw // 2 + 1, budget)
    spectra = _kernel_bytes(tiling, khe, kernels, cg, itemsize, threads)
    kernel = geom.out_channels * cg * khe * kwe * itemsize
    return unit + spectra + kernel + (1 << 16)


def layer_tiling(geom: ConvGeometry, budget: int) -> Tiling:
    """The tiles :func:`plan` picks for ``geom``'s forward pass, which its weight gradient
    (output tiles correlated with input tiles) shares."""
    pt, _, pl, _ = geom.padding
    return convolution_tiling(geom.in_size, dilated_size(geom), (pt, pl), geom.out_size,
                              geom.batch, geom.groups, geom.out_channels // geom.groups,
                              geom.weight_shape[1], geom.dtype.itemsize, budget)


def convolution_tiling(
    src_size: tuple[int, int], kernel: tuple[int, int], shift: tuple[int, int],
    out_size: tuple[int, int], batch: int, groups: int, og: int, ig: int, itemsize: int,
    budget: int,
) -> Tiling:
    """The tiles :func:`plan` picks for a :class:`Convolution` of ``batch`` sources of
    ``src_size`` at ``shift`` with a ``kernel`` (dilated size) of ``groups`` groups, ``ig``
    channels in and ``og`` out each, into ``out_size`` outputs."""
    span = tuple(one_tile_span(*axis) for axis in zip(src_size, kernel, shift, out_size,
                                                       strict=True))
    return plan(out_size, kernel, batch, groups * ig, groups * og, ig, og, itemsize, budget,
                span)  # type: ignore[arg-type]


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
        return convolution_tiling(self.src.shape[2:], (kh, kw), self.shift, self.out_size,
                                  self.src.shape[0], g, og, ig, self.dtype.itemsize, budget)

    def placement(self, tiling: Tiling) -> tuple[int, int]:
        """Where :attr:`src` goes in ``tiling``'s plane (:func:`placement`)."""
        return placement(tiling, self.kernel.shape[:2], self.shift)

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
