"""Direct convolution as numba-compiled loops: no im2col, no padded copy.

Each kernel is parallel (``prange``) over an axis whose iterations write disjoint outputs:
forward over (image, output channel), input gradient over (image, input channel), weight
gradient over (output channel, input channel of the group). The innermost loop runs along
a contiguous output row. Padding never materialises: for each kernel tap the loops are
clipped to the output pixels whose input lies inside the image.

Compiled lazily per dtype and cached on disk (see :mod:`convkit_backends._numba_runtime`,
which also keeps idle OpenMP threads from spinning). Accumulators take the array's dtype, so
float32 stays float32; no ``fastmath`` (NaN and Inf behave as in the other backends).
"""

from __future__ import annotations

import numba
import numpy as np

from convkit.backend import ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends._numba_runtime import jit, quiet_idle_threads

quiet_idle_threads()  # before the first parallel kernel loads the OpenMP runtime
# 'contract' allows FMA and 'reassoc' lets LLVM vectorise the weight gradient's dot products;
# neither assumes finite values, so NaN and Inf propagate as in the other backends.
_FLAGS = {"contract", "reassoc"}
_jit = jit(parallel=True, nogil=True, fastmath=_FLAGS)


@jit(inline="always")
def _valid_range(pad: int, offset: int, stride: int, size: int, out_size: int):
    """Outputs ``o`` in ``[lo, hi)`` with ``0 <= o*stride - pad + offset < size``."""
    start = pad - offset  # o*stride >= start
    lo = 0 if start <= 0 else (start + stride - 1) // stride
    stop = size + pad - offset  # o*stride < stop
    hi = 0 if stop <= 0 else (stop + stride - 1) // stride
    return lo, min(hi, out_size)


@jit(inline="always", fastmath=_FLAGS)
def _gather_axpy(dst, src, alpha, lo: int, hi: int, step: int, offset: int):
    """``dst[j] += alpha * src[j*step + offset]`` for ``j`` in ``[lo, hi)``."""
    if step == 1:  # contiguous: vectorised
        s = src[lo + offset:hi + offset]
        d = dst[lo:hi]
        for j in range(hi - lo):
            d[j] += alpha * s[j]
    else:
        for j in range(lo, hi):
            dst[j] += alpha * src[j * step + offset]


@jit(inline="always", fastmath=_FLAGS)
def _scatter_axpy(dst, src, alpha, lo: int, hi: int, step: int, offset: int):
    """``dst[j*step + offset] += alpha * src[j]`` for ``j`` in ``[lo, hi)``."""
    if step == 1:
        s = src[lo:hi]
        d = dst[lo + offset:hi + offset]
        for j in range(hi - lo):
            d[j] += alpha * s[j]
    else:
        for j in range(lo, hi):
            dst[j * step + offset] += alpha * src[j]


@jit(inline="always", fastmath=_FLAGS)
def _gather_dot(a, b, lo: int, hi: int, step: int, offset: int, total):
    """``total + sum(a[j] * b[j*step + offset] for j in [lo, hi))``."""
    if step == 1:
        u = a[lo:hi]
        v = b[lo + offset:hi + offset]
        for j in range(hi - lo):
            total += u[j] * v[j]
    else:
        for j in range(lo, hi):
            total += a[j] * b[j * step + offset]
    return total


@_jit
def _forward(x, w, y, sh, sw, pt, pl, dh, dw, groups):
    n_img, _, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    ho, wo = y.shape[2], y.shape[3]
    cog = c_out // groups
    for job in numba.prange(n_img * c_out):
        n, o = job // c_out, job % c_out
        c0 = (o // cog) * cg
        out = y[n, o]
        out[:, :] = 0
        for c in range(cg):
            img = x[n, c0 + c]
            for a in range(kh):
                i_lo, i_hi = _valid_range(pt, a * dh, sh, h, ho)
                for b in range(kw):
                    j_lo, j_hi = _valid_range(pl, b * dw, sw, wd, wo)
                    tap = w[o, c, a, b]
                    for i in range(i_lo, i_hi):
                        _gather_axpy(out[i], img[i * sh - pt + a * dh], tap, j_lo, j_hi, sw,
                                     b * dw - pl)


@_jit
def _backward_input(gy, w, gx, sh, sw, pt, pl, dh, dw, groups):
    n_img, c_in, h, wd = gx.shape
    c_out, cg, kh, kw = w.shape
    ho, wo = gy.shape[2], gy.shape[3]
    cog = c_out // groups
    for job in numba.prange(n_img * c_in):
        n, ci = job // c_in, job % c_in
        g, c = ci // cg, ci % cg
        acc = gx[n, ci]
        acc[:, :] = 0
        for o in range(g * cog, (g + 1) * cog):
            grad = gy[n, o]
            for a in range(kh):
                i_lo, i_hi = _valid_range(pt, a * dh, sh, h, ho)
                for b in range(kw):
                    j_lo, j_hi = _valid_range(pl, b * dw, sw, wd, wo)
                    tap = w[o, c, a, b]
                    for i in range(i_lo, i_hi):
                        _scatter_axpy(acc[i * sh - pt + a * dh], grad[i], tap, j_lo, j_hi, sw,
                                      b * dw - pl)


@_jit
def _backward_weight(x, gy, gw, sh, sw, pt, pl, dh, dw, groups):
    n_img, _, h, wd = x.shape
    c_out, cg, kh, kw = gw.shape
    ho, wo = gy.shape[2], gy.shape[3]
    cog = c_out // groups
    for job in numba.prange(c_out * cg):
        o, c = job // cg, job % cg
        ci = (o // cog) * cg + c
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


class NumbaBackend(ConvBackend):
    """Parallel direct-convolution loops compiled by numba."""

    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        y = np.empty(geom.output_shape, geom.dtype)
        _forward(x, weight, y, *_loop_args(geom))
        return y

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        grad_x = np.empty(geom.input_shape, geom.dtype)
        _backward_input(grad_output, weight, grad_x, *_loop_args(geom))
        return grad_x

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        grad_w = np.zeros(geom.weight_shape, geom.dtype)
        _backward_weight(x, grad_output, grad_w, *_loop_args(geom))
        return grad_w


def _loop_args(geom: ConvGeometry) -> tuple[int, ...]:
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    pt, _, pl, _ = geom.padding
    return sh, sw, pt, pl, dh, dw, geom.groups
