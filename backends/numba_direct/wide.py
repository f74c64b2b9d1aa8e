"""Stride-1 kernels of any kernel size on padded copies, every output row ``Wp`` wide.

With every output row computed ``Wp`` wide (the padded width), each kernel tap is one long
contiguous loop over a whole image plane, which LLVM vectorises, instead of ``Ho`` short
rows. The scratch columns this adds are dropped in the forward pass; in the gradients they
multiply zeros, so they are used only where that cannot make a NaN (finite weights for the
input gradient, finite inputs for the weight gradient). The forward pass and the weight
gradient run on a zero-padded copy of the whole input; the gradients on the output gradient
widened to ``(N, Cout, Ho, Wp)`` with zero scratch columns.
"""

from __future__ import annotations

import numba
import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._common import crop, pad
from convkit_backends._workspace import padded_bytes
from convkit_backends.numba_direct._helpers import (
    _axpy,
    _first_input_channel,
    _group_of_input,
    _jit,
    _output_job,
    _zeroed_plane,
)


@_jit
def _forward_unit_stride(xp, w, y, dh, dw, groups, length):
    """Stride 1: each kernel tap is one long vectorised pass over the padded input ``xp``.

    Output pixel ``(i, j)`` is computed at ``i*Wp + j`` of a row-major ``(Ho, Wp)`` buffer, so
    tap ``(a, b)`` reads ``xp`` flat at a constant offset ``a*dh*Wp + b*dw``; the columns
    ``j >= Wo`` are scratch and dropped. ``length`` (:func:`_unit_stride_args`) stops
    before the last row's scratch tail, which would read past the plane.
    """
    n_img, _, hp, wp = xp.shape
    c_out, cg, kh, kw = w.shape
    ho, wo = y.shape[2], y.shape[3]
    for job in numba.prange(n_img * c_out):
        n, o, c0 = _output_job(job, c_out, cg, groups)
        acc = np.zeros(ho * wp, y.dtype)
        for c in range(cg):
            img = xp[n, c0 + c].reshape(hp * wp)
            for a in range(kh):
                for b in range(kw):
                    _axpy(acc, img[a * dh * wp + b * dw:], w[o, c, a, b], length)
        out = y[n, o]
        for i in range(ho):
            out[i, :] = acc[i * wp:i * wp + wo]


@_jit
def _backward_input_unit_stride(gy_wide, w, gxp, dh, dw, groups, length):
    """Stride 1, the transpose of :func:`_forward_unit_stride`: into the padded ``gxp``.

    ``gy_wide: (N, Cout, Ho, Wp)`` is the output gradient with zero scratch columns
    ``j >= Wo``; they add ``tap * 0``, which is 0 only for finite weights (the caller checks).
    """
    n_img, c_in, _, wp = gxp.shape
    c_out, cg, kh, kw = w.shape
    ho = gy_wide.shape[2]
    for job in numba.prange(n_img * c_in):
        n, ci = job // c_in, job % c_in
        c, o_lo, o_hi = _group_of_input(ci, cg, c_out // groups)
        acc = _zeroed_plane(gxp, n, ci)
        for o in range(o_lo, o_hi):
            grad = gy_wide[n, o].reshape(ho * wp)
            for a in range(kh):
                for b in range(kw):
                    _axpy(acc[a * dh * wp + b * dw:], grad, w[o, c, a, b], length)


@_jit
def _backward_weight_unit_stride(xp, gy_wide, gw, dh, dw, groups, length):
    """Stride 1: each tap's sum is one long dot product per image (see the forward).

    The zero scratch columns of ``gy_wide`` meet real input values, so ``xp`` must be finite
    (the caller checks).
    """
    n_img, _, hp, wp = xp.shape
    c_out, cg, kh, kw = gw.shape
    ho = gy_wide.shape[2]
    for job in numba.prange(c_out * cg):
        o, c = job // cg, job % cg
        ci = _first_input_channel(o, c_out, cg, groups) + c
        taps = gw[o, c]
        for n in range(n_img):
            grad = gy_wide[n, o].reshape(ho * wp)
            img = xp[n, ci].reshape(hp * wp)
            for a in range(kh):
                for b in range(kw):
                    src = img[a * dh * wp + b * dw:]
                    total = taps[a, b]
                    for p in range(length):
                        total += grad[p] * src[p]
                    taps[a, b] = total


def forward(x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``y: (N, Cout, Ho, Wo)`` from ``x: (N, C, H, W)``; the scratch columns are dropped."""
    y = np.empty(geom.output_shape, geom.dtype)
    _forward_unit_stride(pad(x, geom), weight, y, *_unit_stride_args(geom))
    return y


def backward_input(grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``grad_x: (N, C, H, W)`` from ``grad_output: (N, Cout, Ho, Wo)``; finite weights
    only (they meet the zero scratch columns)."""
    grad_xp = np.empty((geom.batch, geom.in_channels, *geom.padded_size), geom.dtype)
    _backward_input_unit_stride(_widen(grad_output, geom), weight, grad_xp,
                                *_unit_stride_args(geom))
    return np.ascontiguousarray(crop(grad_xp, geom))


def backward_weight(x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``grad_w: (Cout, C/G, kh, kw)``; finite ``x`` only (it meets the zero scratch
    columns of the widened output gradient)."""
    grad_w = np.zeros(geom.weight_shape, geom.dtype)
    _backward_weight_unit_stride(pad(x, geom), _widen(grad_output, geom), grad_w,
                                 *_unit_stride_args(geom))
    return grad_w


def workspace_bytes(geom: ConvGeometry, method: str) -> int:
    """The padded input (none without padding) and one ``(Ho, Wp)`` accumulator per thread
    (forward); the widened output gradient and the padded input gradient (input gradient);
    the padded input and the widened output gradient (weight gradient)."""
    n, itemsize = geom.batch, geom.dtype.itemsize
    (ho, _), (_, wp) = geom.out_size, geom.padded_size
    padded_x = padded_bytes(geom, n) if any(geom.padding) else 0
    widened = n * geom.out_channels * ho * wp * itemsize
    if method == "forward":
        return padded_x + min(numba.get_num_threads(), n * geom.out_channels) * ho * wp * itemsize
    if method == "backward_input":
        return widened + padded_bytes(geom, n)
    return padded_x + widened


def _widen(grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``(N, Cout, Ho, Wo)`` -> ``(N, Cout, Ho, Wp)``, zeros in the scratch columns."""
    wide = np.zeros((*grad_output.shape[:3], geom.padded_size[1]), geom.dtype)
    wide[..., :geom.out_size[1]] = grad_output
    return wide


def _unit_stride_args(geom: ConvGeometry) -> tuple[int, ...]:
    """``dh, dw, groups, length``: the flat length of an ``(Ho, Wp)`` plane that is read."""
    (dh, dw), (ho, _), (_, wp) = geom.dilation, geom.out_size, geom.padded_size
    return dh, dw, geom.groups, ho * wp - (geom.kernel_size[1] - 1) * dw
