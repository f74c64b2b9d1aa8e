"""Stride-1 kernels of any kernel size on padded planes, every output row ``Wp`` wide.

The forward pass runs :mod:`.vector_rows` (sums of two output rows in registers) wherever
that applies, i.e. without dilation. Else, and in the gradients, every output row is
computed ``Wp`` wide (the padded width), so each kernel tap is one long contiguous loop over
a whole image plane, which LLVM vectorises, instead of ``Ho`` short rows; the forward pass
applies up to 8 taps of a kernel row in one such loop. The scratch columns this adds are
dropped in the forward pass; in the gradients they multiply zeros, so they are used only
where that cannot make a NaN (finite weights for the input gradient, finite inputs for the
weight gradient). The forward pass pads one group of input planes at a time per thread. The
input gradient is the forward pass of the flipped, transposed kernel over the output
gradient (exact for finite weights, which the choice guarantees) when the padding is within
the kernel's extent, else a transposed loop into a padded gradient. The weight gradient runs
on a zero-padded copy of the whole input and the output gradient widened to
``(N, Cout, Ho, Wp)`` with zero scratch columns.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._common import (
    crop,
    pad,
    padding_within_kernel,
    transposed_convolution,
    transposed_geometry,
)
from convkit_backends._workspace import padded_bytes
from convkit_backends.numba_direct import vector_rows
from convkit_backends.numba_direct._helpers import (
    _FLAGS,
    _axpy,
    _chunk,
    _copy_into,
    _copy_rows,
    _first_input_channel,
    _group_of_input,
    _jit,
    _output_job,
    _zeroed_plane,
)
from convkit_backends.numba_direct._runtime import jit


@jit(inline="always", fastmath=_FLAGS)
def _taps2(acc, s, d, t, m: int):
    """``acc[p] += sum_b t[b] * s[p + b*d]`` over 2 taps, ``p < m`` (as :func:`_taps8`)."""
    s0, s1 = s[0:], s[d:]
    t0, t1 = t[0], t[1]
    for p in range(m):
        acc[p] += t0 * s0[p] + t1 * s1[p]


@jit(inline="always", fastmath=_FLAGS)
def _taps3(acc, s, d, t, m: int):
    """``acc[p] += sum_b t[b] * s[p + b*d]`` over 3 taps (as :func:`_taps8`)."""
    s0, s1, s2 = s[0:], s[d:], s[2 * d:]
    t0, t1, t2 = t[0], t[1], t[2]
    for p in range(m):
        acc[p] += t0 * s0[p] + t1 * s1[p] + t2 * s2[p]


@jit(inline="always", fastmath=_FLAGS)
def _taps4(acc, s, d, t, m: int):
    """``acc[p] += sum_b t[b] * s[p + b*d]`` over 4 taps (as :func:`_taps8`)."""
    s0, s1, s2, s3 = s[0:], s[d:], s[2 * d:], s[3 * d:]
    t0, t1, t2, t3 = t[0], t[1], t[2], t[3]
    for p in range(m):
        acc[p] += t0 * s0[p] + t1 * s1[p] + t2 * s2[p] + t3 * s3[p]


@jit(inline="always", fastmath=_FLAGS)
def _taps7(acc, s, d, t, m: int):
    """``acc[p] += sum_b t[b] * s[p + b*d]`` over 7 taps, a whole 7x7 kernel row (as
    :func:`_taps8`; measured 1.08x faster on 7x7 layers than 4 + 3 taps)."""
    s0, s1, s2, s3, s4, s5, s6 = s[0:], s[d:], s[2 * d:], s[3 * d:], s[4 * d:], s[5 * d:], s[6 * d:]
    t0, t1, t2, t3, t4, t5, t6 = t[0], t[1], t[2], t[3], t[4], t[5], t[6]
    for p in range(m):
        acc[p] += (t0 * s0[p] + t1 * s1[p] + t2 * s2[p] + t3 * s3[p] + t4 * s4[p]
                   + t5 * s5[p] + t6 * s6[p])


@jit(inline="always", fastmath=_FLAGS)
def _taps8(acc, s, d, t, m: int):
    """``acc[p] += sum_b t[b] * s[p + b*d]`` for ``b < 8``, ``p < m``.

    ``acc``, ``s``: flat 1-D views; ``t``: the taps' weights. One view per tap, indexed by
    ``p`` alone, so the loop vectorises; each pass loads and stores ``acc`` once for 8 taps,
    where a pass per tap is bound by those loads and stores.
    """
    s0, s1, s2, s3 = s[0:], s[d:], s[2 * d:], s[3 * d:]
    s4, s5, s6, s7 = s[4 * d:], s[5 * d:], s[6 * d:], s[7 * d:]
    t0, t1, t2, t3, t4, t5, t6, t7 = t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]
    for p in range(m):
        acc[p] += (t0 * s0[p] + t1 * s1[p] + t2 * s2[p] + t3 * s3[p] + t4 * s4[p]
                   + t5 * s5[p] + t6 * s6[p] + t7 * s7[p])


@jit(inline="always")
def _taps(acc, s, d, t, m: int, count: int):
    """``acc[p] += sum_b t[b] * s[p + b*d]`` for ``b < count`` (8, 7, 4, 3, 2 or 1)."""
    if count == 8:
        _taps8(acc, s, d, t, m)
    elif count == 7:
        _taps7(acc, s, d, t, m)
    elif count == 4:
        _taps4(acc, s, d, t, m)
    elif count == 3:
        _taps3(acc, s, d, t, m)
    elif count == 2:
        _taps2(acc, s, d, t, m)
    else:
        _axpy(acc, s, t[0], m)


@jit(inline="always")
def _kernel_row(acc, row, taps, kw: int, dw: int, m: int):
    """``acc[p] += sum_b taps[b] * row[p + b*dw]`` for ``b < kw``: runs of 8 taps, then the
    rest as 7, or 4 and what remains (:func:`_taps8`)."""
    b = 0
    while b < kw:
        rest = kw - b
        count = 8 if rest >= 8 else 7 if rest == 7 else 4 if rest >= 4 else rest
        _taps(acc, row[b * dw:], dw, taps[b:], m, count)
        b += count


@_jit
def _forward_unit_stride(x, w, y, pt, pl, hp, wp, dh, dw, groups, length, threads):
    """Stride 1: each kernel row is one long vectorised pass over a padded input plane.

    Output pixel ``(i, j)`` is computed at ``i*Wp + j`` of a row-major ``(Ho, Wp)`` buffer, so
    tap ``(a, b)`` reads the ``(Hp, Wp)`` padded plane flat at a constant offset
    ``a*dh*Wp + b*dw``; the columns ``j >= Wo`` are scratch and dropped. ``length``
    (:func:`_unit_stride_args`) stops before the last row's scratch tail, which would read
    past the plane. Jobs ``(image, output channel)`` are cut into one run per thread; a run
    copies its group's input planes into its own zero-framed ``(Cg, Hp, Wp)`` buffer (padded
    by ``pt`` rows and ``pl`` columns) when the ``(image, group)`` changes, so no padded copy
    of the whole input is made.
    """
    n_img, _, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    ho = y.shape[2]
    cog = c_out // groups
    padded = (hp, wp) != (h, wd)
    jobs = n_img * c_out
    chunks = min(threads, jobs)
    # per-thread scratch, allocated here: arrays allocated inside prange were measured slower
    planes = np.zeros((chunks, cg if padded else 0, hp, wp), y.dtype)
    accs = np.empty((chunks, ho * wp), y.dtype)
    for t in numba.prange(chunks):
        xl, acc = planes[t], accs[t]
        loaded = -1  # the (image, group) whose planes xl holds
        lo, hi = _chunk(t, chunks, jobs)
        for job in range(lo, hi):
            n, o, c0 = _output_job(job, c_out, cg, groups)
            ng = n * groups + o // cog
            if padded and ng != loaded:
                for c in range(cg):
                    _copy_into(xl[c], x[n, c0 + c], pt, pl)
                loaded = ng
            acc[:] = 0
            for c in range(cg):
                img = (xl[c] if padded else x[n, c0 + c]).reshape(hp * wp)
                for a in range(kh):
                    _kernel_row(acc, img[a * dh * wp:], w[o, c, a], kw, dw, length)
            _copy_rows(y[n, o], acc)


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
    """``y: (N, Cout, Ho, Wo)`` from ``x: (N, C, H, W)``: :func:`.vector_rows.forward` where
    it applies, else every row ``Wp`` wide, the scratch columns dropped."""
    if vector_rows.applies(geom):
        return vector_rows.forward(x, weight, geom)
    y = np.empty(geom.output_shape, geom.dtype)
    (pt, _, pl, _), (hp, wp) = geom.padding, geom.padded_size
    dh, dw, groups, length = _unit_stride_args(geom)
    _forward_unit_stride(np.ascontiguousarray(x), weight, y, pt, pl, hp, wp, dh, dw, groups,
                         length, numba.get_num_threads())
    return y


def backward_input(grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``grad_x: (N, C, H, W)`` from ``grad_output: (N, Cout, Ho, Wo)``; finite weights
    only (they meet the added zero padding or the zero scratch columns)."""
    if padding_within_kernel(geom):
        return forward(grad_output, *transposed_convolution(weight, geom))
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
    """:func:`.vector_rows.workspace_bytes` where that runs the forward pass, else per
    thread a group's padded input planes (none without padding) and one ``(Ho, Wp)``
    accumulator (forward); the flipped weight and the forward pass's workspace of the
    transposed geometry, or the widened output gradient and the padded input gradient
    (input gradient); the padded input and the widened output gradient (weight gradient)."""
    n, itemsize = geom.batch, geom.dtype.itemsize
    (ho, _), (hp, wp) = geom.out_size, geom.padded_size
    padded_x = padded_bytes(geom, n) if any(geom.padding) else 0
    widened = n * geom.out_channels * ho * wp * itemsize
    if method == "forward":
        if vector_rows.applies(geom):
            return vector_rows.workspace_bytes(geom, method)
        runs = min(numba.get_num_threads(), n * geom.out_channels)
        planes = geom.weight_shape[1] * hp * wp if any(geom.padding) else 0
        return runs * (planes + ho * wp) * itemsize
    if method == "backward_input":
        if padding_within_kernel(geom):
            flipped = math.prod(geom.weight_shape) * itemsize
            return flipped + workspace_bytes(transposed_geometry(geom), "forward")
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
