"""The fft backend's engine for layers with one input channel per group (depthwise): the
spectra stay in the arrays' own layout and multiply elementwise.

When one tile holds a whole image, its planes take the shortest circular length that leaves
the wanted outputs free of wrapped-around terms (:func:`_circular_length`: 72 instead of 90
for 56x56 images and 31x31 kernels), and two images share one complex plane: image ``2k``
as the real part, ``2k+1`` as the imaginary part. The kernel is real, so the convolution of
that complex plane is the two images' convolutions as its real and imaginary parts, and
complex transforms of half as many planes cost what real ones of all of them would. The
planes are a kept buffer that every transform works on in place, so a call allocates no
spectra (their page faults cost more than the product). Larger images run in tiles
(overlap-save) with real transforms.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.fft as sfft

from convkit.geometry import ConvGeometry
from convkit_backends._buffers import Buffers
from convkit_backends.fft._plan import (
    Convolution,
    Tiling,
    band,
    circular_span,
    dilated_size,
    layer_tiling,
    layer_units,
)
from convkit_backends.fft._spectra import gather, place, trailing_spectrum
from convkit_backends.fft._workers import copy_in_parts


def convolve_depthwise(
    conv: Convolution, budget: int, buffers: Buffers, workers: int
) -> np.ndarray:
    """``conv``'s result (its kernel has one input channel per group)."""
    kh, kw = conv.kernel.shape[:2]
    tiling = conv.tiling(budget)
    out = conv.empty_output()
    if tiling.tiles == 1:
        # The outputs of an unshifted source lie at these offsets of its circular
        # convolution, which may be shorter than the linear one: only the wanted outputs
        # must be free of wrapped-around terms.
        offsets = (kh - 1 - conv.shift[0], kw - 1 - conv.shift[1])
        lengths = [_circular_length(size, k, offset, t) for size, k, offset, t in zip(
            conv.src.shape[2:], (kh, kw), offsets, conv.out_size, strict=True)]
        tiling = replace(tiling, Th=lengths[0], Tw=lengths[1])
        spec = _full_spectrum(conv.kernel, tiling, buffers, workers)
        for unit in conv.units(tiling, budget):
            _paired(conv.src[unit.images], spec, offsets, tiling, out[unit.images], buffers,
                    workers)
    else:
        _tiled(conv, tiling, out, budget, buffers, workers)
    return out


def _full_spectrum(
    kernel: np.ndarray, tiling: Tiling, buffers: Buffers, workers: int
) -> np.ndarray:
    """``kernel: (kh, kw, G, og, 1)`` -> its full ``(G, og, Th, Tw)`` complex spectrum."""
    kh, kw, g, og, _ = kernel.shape
    dtype = np.result_type(kernel.dtype, np.complex64)
    spec = buffers.empty("kernel", (g, og, tiling.Th, tiling.Tw), dtype)
    spec[:, :, kh:] = 0
    spec[:, :, :kh, kw:] = 0
    spec[:, :, :kh, :kw] = kernel[..., 0].transpose(2, 3, 0, 1)
    rows = spec[:, :, :kh]  # the other rows are zeros, and so are their transforms
    _in_place(sfft.fft(rows, axis=-1, overwrite_x=True, workers=workers), rows)
    return _in_place(sfft.fft(spec, axis=-2, overwrite_x=True, workers=workers), spec)


def _paired(
    images: np.ndarray, spec: np.ndarray, offsets: tuple[int, int], tiling: Tiling,
    out: np.ndarray, buffers: Buffers, workers: int,
) -> None:
    """``out: (b, G*og, Ho, Wo)`` from ``images: (b, G, Hs, Ws)``, two images per complex
    plane (see the module notes); ``spec: (G, og, Th, Tw)``."""
    b, g, hs, ws = images.shape
    og = spec.shape[1]
    pairs, th, tw = (b + 1) // 2, tiling.th, tiling.tw
    planes = buffers.empty("spectrum", (pairs, g, tiling.Th, tiling.Tw), spec.dtype)
    planes[:, :, hs:] = 0
    planes[:, :, :hs, ws:] = 0
    copy_in_parts(planes.real[:, :, :hs, :ws], images[0::2], workers)
    copy_in_parts(planes.imag[:b // 2, :, :hs, :ws], images[1::2], workers)
    if b % 2:
        planes.imag[-1, :, :hs, :ws] = 0
    data_rows = planes[:, :, :hs]
    _in_place(sfft.fft(data_rows, axis=-1, overwrite_x=True, workers=workers), data_rows)
    _in_place(sfft.fft(planes, axis=-2, overwrite_x=True, workers=workers), planes)
    if og == 1:
        product = np.multiply(planes, spec[:, 0], out=planes)[:, :, None]
    else:
        product = buffers.empty("product", (pairs, g, og, tiling.Th, tiling.Tw),
                                spec.dtype)
        np.multiply(planes[:, :, None], spec, out=product)
    _in_place(sfft.ifft(product, axis=-2, overwrite_x=True, workers=workers), product)
    rows = _window(product, -2, offsets[0], th)
    rows = _in_place(sfft.ifft(rows, axis=-1, overwrite_x=True, workers=workers), rows)
    valid = _window(rows, -1, offsets[1], tw).reshape(pairs, g * og, th, tw)
    copy_in_parts(out[0::2], valid.real, workers)
    copy_in_parts(out[1::2], valid.imag[:b // 2], workers)


def _tiled(
    conv: Convolution, tiling: Tiling, out: np.ndarray, budget: int, buffers: Buffers,
    workers: int,
) -> None:
    """:func:`convolve_depthwise` over overlap-save tiles with real transforms."""
    og = conv.kernel.shape[3]
    spec = trailing_spectrum(conv.kernel[..., 0].transpose(2, 3, 0, 1), tiling, workers)
    spec = spec[:, :, None, None]  # (G, og, 1, 1, Th, Tw')
    for unit in conv.units(tiling, budget):
        part, moved, target = band(tiling, unit, conv.placement(tiling), out)
        tiles = gather(conv.src[unit.images], moved, part, leading=False, buffers=buffers,
                       name="x", workers=workers)
        xs = sfft.rfft2(tiles, workers=workers)  # (b, G, nh, nw, Th, Tw')
        del tiles
        # (b, G, og, nh, nw, Th, Tw'); in place for one output per group: no fresh pages
        ys = np.multiply(xs, spec[:, 0], out=xs)[:, :, None] if og == 1 else xs[:, :, None] * spec
        del xs
        rows = sfft.ifft(ys, axis=-2, overwrite_x=True, workers=workers)
        cols = rows[..., part.Th - part.th:, :]
        planes = sfft.irfft(cols, n=part.Tw, axis=-1, workers=workers)
        valid = planes[..., part.Tw - part.tw:]  # (b, G, og, nh, nw, th, tw)
        place(valid.transpose(0, 1, 2, 3, 5, 4, 6), target, part, workers)


def correlate_weight_depthwise(
    x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry, budget: int, buffers: Buffers,
    workers: int,
) -> np.ndarray:
    """The weight gradient of a layer with one input channel per group: the padded input's
    tiles correlated with ``grad_output``'s, elementwise in the arrays' own layout."""
    khe, kwe = dilated_size(geom)
    (dh, dw), (pt, _, pl, _) = geom.dilation, geom.padding
    g, cog = geom.groups, geom.out_channels // geom.groups
    tiling = layer_tiling(geom, budget)
    acc = None
    for unit in layer_units(geom, tiling, budget):
        part, moved, _ = band(tiling, unit, (pt, pl))
        tiles = gather(x[unit.images], moved, part, leading=False, buffers=buffers,
                       name="x", workers=workers)
        xs = sfft.rfft2(tiles, workers=workers)
        gtiles = gather(grad_output[unit.images], (moved[0] - pt, 0), part,
                        size=(tiling.th, tiling.tw), leading=False, buffers=buffers,
                        name="x", workers=workers)
        gs = sfft.rfft2(gtiles, workers=workers)
        b = gs.shape[0]
        gs = gs.reshape(b, g, cog, *gs.shape[2:])  # (b, G, og, nh, nw, Th, Tw')
        np.conjugate(gs, out=gs)
        gs *= xs[:, :, None]
        part_sum = gs.sum(axis=(0, 3, 4))  # (G, og, Th, Tw')
        acc = part_sum if acc is None else np.add(acc, part_sum, out=acc)
    rows = sfft.ifft(acc, axis=-2, overwrite_x=True, workers=workers)[..., :khe:dh, :]
    full = sfft.irfft(rows, n=tiling.Tw, axis=-1, workers=workers)[..., :kwe:dw]
    return np.ascontiguousarray(full.reshape(geom.weight_shape), dtype=geom.dtype)


def _circular_length(size: int, k: int, offset: int, t: int) -> int:
    """The shortest fast length of a complex transform that holds ``size`` source samples
    unshifted and leaves the linear convolution's outputs ``offset .. offset + t`` (negative:
    before the first sample) free of wrapped-around terms (``_plan.circular_span``)."""
    return sfft.next_fast_len(circular_span(size, k, k - 1 - offset, t))


def _window(a: np.ndarray, axis: int, first: int, count: int) -> np.ndarray:
    """``count`` entries of ``a`` along ``axis`` from ``first``, circularly (a view unless the
    window wraps)."""
    length = a.shape[axis]
    first %= length
    if first + count <= length:
        index = [slice(None)] * a.ndim
        index[axis] = slice(first, first + count)
        return a[tuple(index)]
    return np.take(a, np.arange(first, first + count) % length, axis=axis)


def _in_place(result: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``target`` holding ``result``: scipy transforms ``overwrite_x`` arrays in place, but
    need not."""
    if not np.shares_memory(result, target):
        target[...] = result
    return target
