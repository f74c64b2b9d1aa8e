"""NaN from zero padding, for backends that skip padded taps instead of multiplying by 0.

With zero padding, ``y = sum w * xp`` includes ``w * 0`` for every kernel tap over the
padding, and IEEE arithmetic makes ``Inf * 0`` and ``NaN * 0`` NaN. The naive backend,
im2col and PyTorch all compute those products. A backend that clips its loops to the image
(faster, no padded copy) never sees them, so a non-finite weight (forward) or output
gradient (weight gradient) would leave finite values where the others have NaN. These
functions put the NaN back; they cost one ``isfinite`` pass when everything is finite.

Backends whose transforms mix a whole tile (fft, winograd) instead send calls with any
NaN/Inf operand to an exact backend; :func:`all_finite` is their test.
"""

from __future__ import annotations

import math

import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends.numba_direct._helpers import _FLAGS, _all_finite
from convkit_backends.numba_direct._runtime import jit


def padded_taps(geom: ConvGeometry) -> np.ndarray:
    """``(kh*kw, Ho*Wo)`` bool: tap ``(a, b)`` of output ``(i, j)`` lies in the padding."""
    (h, w), (kh, kw), (ho, wo) = geom.in_size, geom.kernel_size, geom.out_size
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    pt, _, pl, _ = geom.padding
    rows = np.arange(kh)[:, None] * dh + np.arange(ho) * sh - pt  # (kh, Ho) input row
    cols = np.arange(kw)[:, None] * dw + np.arange(wo) * sw - pl  # (kw, Wo) input column
    outside_rows, outside_cols = (rows < 0) | (rows >= h), (cols < 0) | (cols >= w)
    taps = outside_rows[:, None, :, None] | outside_cols[None, :, None, :]
    return taps.reshape(kh * kw, ho * wo)


def forward_padding_nan(y: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> None:
    """Set ``y[:, o, i, j]`` NaN where a non-finite ``weight[o, :, a, b]`` meets padding."""
    if not any(geom.padding):
        return
    bad = ~np.isfinite(weight)
    if not bad.any():
        return
    bad_taps = bad.any(axis=1).reshape(geom.out_channels, -1)  # (Cout, kh*kw)
    hit = (bad_taps.astype(np.int64) @ padded_taps(geom)) > 0  # (Cout, Ho*Wo)
    y[:, hit.reshape(geom.out_channels, *geom.out_size)] = np.nan


def weight_grad_padding_nan(
    grad_w: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
) -> None:
    """Set ``grad_w[o, :, a, b]`` NaN where a non-finite ``grad_output[:, o, i, j]`` meets
    padding."""
    if not any(geom.padding):
        return
    bad = ~np.isfinite(grad_output)
    if not bad.any():
        return
    bad_outputs = bad.any(axis=0).reshape(geom.out_channels, -1)  # (Cout, Ho*Wo)
    hit = (bad_outputs.astype(np.int64) @ padded_taps(geom).T) > 0  # (Cout, kh*kw)
    grad_w.transpose(0, 2, 3, 1)[hit.reshape(geom.out_channels, *geom.kernel_size)] = np.nan


def padding_nan_bytes(geom: ConvGeometry, method: str) -> int:
    """An upper bound of the temporaries of :func:`forward_padding_nan` (``'forward'``) or
    :func:`weight_grad_padding_nan` (``'backward_weight'``), in bytes.

    Without padding they allocate nothing; with finite values, only the finiteness mask and
    its negation (a bool per weight or output gradient element). A non-finite value adds
    the mask reduced to ``(Cout, kh*kw)`` or ``(Cout, Ho*Wo)`` and its int64 copy,
    :func:`padded_taps` as bool and as int64 (the matmul casts it), the int64 product and
    its bool comparison, and the index arrays that assigning through a boolean mask can take
    (three int64 per hit).
    """
    if not any(geom.padding):
        return 0
    (kh, kw), (ho, wo), c_out = geom.kernel_size, geom.out_size, geom.out_channels
    if method == "forward":
        checked, reduced, hits = math.prod(geom.weight_shape), c_out * kh * kw, c_out * ho * wo
    else:
        checked, reduced, hits = math.prod(geom.output_shape), c_out * ho * wo, c_out * kh * kw
    return 2 * checked + 9 * reduced + 9 * kh * kw * ho * wo + 33 * hits


def all_finite(*arrays: np.ndarray) -> bool:
    """Whether no array holds NaN/Inf: one pass each, a vectorised sum of ``v - v`` (0 for
    finite ``v``, NaN otherwise, so large finite values cannot overflow it as they did
    ``a.sum()``). ``a.sum()`` took 10.8 us of a 1x256x14x14 float32 result."""
    return all(_finite(a) for a in arrays)


def _finite(a: np.ndarray) -> bool:
    if a.size == 0:
        return True
    if a.dtype.kind == "f" and a.flags.c_contiguous:
        return bool(_finite_flat(a.reshape(-1)))
    return bool(np.isfinite(a).all())


@jit(nogil=True, fastmath=_FLAGS)  # 'reassoc' vectorises the sum, even inlined
def _finite_flat(a) -> bool:
    return _all_finite(a)
