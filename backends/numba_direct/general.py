"""The general kernels: any stride, dilation and kernel size, row by row, loops clipped to
the image.

Each kernel is parallel (``prange``) over an axis whose iterations write disjoint outputs:
forward over (image, output channel), input gradient over (image, input channel), weight
gradient over (output channel, input channel of the group). Each output row is a short
loop clipped to the input pixels inside the image (:func:`_valid_range`), so no padded
copy is made; the forward pass and the weight gradient therefore never see the padding's
``Inf * 0 = NaN`` (the caller restores it, :mod:`convkit_backends._nonfinite`). They run
strided dilated layers, and the non-finite cases the faster families cannot take.
"""

from __future__ import annotations

import numba
import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._nonfinite import (
    forward_padding_nan,
    padding_nan_bytes,
    weight_grad_padding_nan,
)
from convkit_backends.numba_direct._helpers import (
    _first_input_channel,
    _gather_axpy,
    _gather_dot,
    _group_of_input,
    _jit,
    _output_job,
    _scatter_axpy,
    _valid_range,
)
from convkit_backends.numba_direct._runtime import jit


@jit(inline="always")
def _plane_taps(out, img, k, sh, sw, pt, pl, dh, dw, input_grad: bool):
    """Every tap of ``k: (kh, kw)`` between an output plane ``out: (Ho, Wo)`` and an input
    plane ``img: (H, W)``, each row's loop clipped to the image (:func:`_valid_range`).

    The forward pass: ``out[i, j] += k[a, b] * img[i*sh - pt + a*dh, j*sw - pl + b*dw]``;
    ``input_grad``: the same pairs of pixels the other way, ``img[...] += k[a, b] * out[i, j]``.
    """
    h, wd = img.shape
    ho, wo = out.shape
    for a in range(k.shape[0]):
        i_lo, i_hi = _valid_range(pt, a * dh, sh, h, ho)
        for b in range(k.shape[1]):
            j_lo, j_hi = _valid_range(pl, b * dw, sw, wd, wo)
            tap = k[a, b]
            for i in range(i_lo, i_hi):
                row = img[i * sh - pt + a * dh]
                if input_grad:  # a constant: each kernel compiles one branch
                    _scatter_axpy(row, out[i], tap, j_lo, j_hi, sw, b * dw - pl)
                else:
                    _gather_axpy(out[i], row, tap, j_lo, j_hi, sw, b * dw - pl)


@_jit
def _forward(x, w, y, sh, sw, pt, pl, dh, dw, groups):
    n_img, c_out, cg = x.shape[0], w.shape[0], w.shape[1]
    for job in numba.prange(n_img * c_out):
        n, o, c0 = _output_job(job, c_out, cg, groups)
        out = y[n, o]
        out[:, :] = 0
        for c in range(cg):
            _plane_taps(out, x[n, c0 + c], w[o, c], sh, sw, pt, pl, dh, dw, input_grad=False)


@_jit
def _backward_input(gy, w, gx, sh, sw, pt, pl, dh, dw, groups):
    n_img, c_in, c_out, cg = gx.shape[0], gx.shape[1], w.shape[0], w.shape[1]
    for job in numba.prange(n_img * c_in):
        n, ci = job // c_in, job % c_in
        c, o_lo, o_hi = _group_of_input(ci, cg, c_out // groups)
        acc = gx[n, ci]
        acc[:, :] = 0
        for o in range(o_lo, o_hi):
            _plane_taps(gy[n, o], acc, w[o, c], sh, sw, pt, pl, dh, dw, input_grad=True)


@_jit
def _backward_weight(x, gy, gw, sh, sw, pt, pl, dh, dw, groups):
    n_img, _, h, wd = x.shape
    c_out, cg, kh, kw = gw.shape
    ho, wo = gy.shape[2], gy.shape[3]
    for job in numba.prange(c_out * cg):
        o, c = job // cg, job % cg
        ci = _first_input_channel(o, c_out, cg, groups) + c
        taps = gw[o, c]  # (kh, kw), zeroed; image by image, so both planes stay in cache
        for n in range(n_img):
            grad, img = gy[n, o], x[n, ci]
            for a in range(kh):
                i_lo, i_hi = _valid_range(pt, a * dh, sh, h, ho)
                for b in range(kw):
                    j_lo, j_hi = _valid_range(pl, b * dw, sw, wd, wo)
                    total = taps[a, b]
                    for i in range(i_lo, i_hi):
                        total = _gather_dot(grad[i], img[i * sh - pt + a * dh], j_lo, j_hi, sw,
                                            b * dw - pl, total)
                    taps[a, b] = total


def forward(x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``y: (N, Cout, Ho, Wo)`` from ``x: (N, C, H, W)`` and ``weight: (Cout, C/G, kh, kw)``."""
    y = np.empty(geom.output_shape, geom.dtype)
    _forward(x, weight, y, *_loop_args(geom))
    forward_padding_nan(y, weight, geom)  # the clipped loops skipped the padding's Inf * 0
    return y


def backward_input(grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``grad_x: (N, C, H, W)`` from ``grad_output: (N, Cout, Ho, Wo)`` and the weight."""
    grad_x = np.empty(geom.input_shape, geom.dtype)
    _backward_input(grad_output, weight, grad_x, *_loop_args(geom))
    return grad_x


def backward_weight(x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``grad_w: (Cout, C/G, kh, kw)`` from ``x`` and ``grad_output: (N, Cout, Ho, Wo)``."""
    grad_w = np.zeros(geom.weight_shape, geom.dtype)
    _backward_weight(x, grad_output, grad_w, *_loop_args(geom))
    weight_grad_padding_nan(grad_w, grad_output, geom)  # as in forward
    return grad_w


def workspace_bytes(geom: ConvGeometry, method: str) -> int:
    """No copies: only the temporaries of restoring the padding's NaN
    (:func:`~convkit_backends._nonfinite.padding_nan_bytes`)."""
    return 0 if method == "backward_input" else padding_nan_bytes(geom, method)


def _loop_args(geom: ConvGeometry) -> tuple[int, ...]:
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    pt, _, pl, _ = geom.padding
    return sh, sw, pt, pl, dh, dw, geom.groups
