"""Stride-2 3x3 kernels without dilation (ResNet's downsampling), on phase-split planes.

The forward pass and the weight gradient (:func:`_forward_3x3_stride2`,
:func:`_backward_weight_3x3_stride2`) work like the stride-1 3x3 kernels
(:mod:`.three_by_three`), with each thread's padded planes split by row and column parity:
then every tap reads one phase at a constant offset. The input gradient
(:func:`_backward_input_3x3_stride2`) computes the four parity phases of each input
gradient plane from a zero-framed copy of the output gradient (finite weights only: the
frame's zeros meet them).
"""

from __future__ import annotations

import numba
import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends.numba_direct._helpers import (
    _FLAGS,
    _chunk,
    _copy_into,
    _copy_vector,
    _group_pair,
    _jit,
    _pair_job,
    _pair_runs,
    thread_runs,
)
from convkit_backends.numba_direct._runtime import jit
from convkit_backends.numba_direct._taps import (
    _pair_dots,
    _pair_taps,
    _store_pair,
    _tap_weights,
)


@jit(inline="always")
def _phase_row(phases, row, r: int, left: int, parity: int):
    """The pixels of image row ``row: (W,)`` (padded row ``r``, first column at ``left``) whose
    padded column has ``parity``: as ``(phase part, row part)``, views of equal length.

    ``phases: (4, Hq, Wq)`` is a padded plane split by row and column parity: padded pixel
    ``(r, col)`` is ``phases[2*(r % 2) + col % 2, r // 2, col // 2]``.
    """
    first = (parity - left) % 2  # the first column of the row with this parity
    part = row[first::2]
    start = (left + first) // 2
    return phases[2 * (r % 2) + parity, r // 2, start:start + part.shape[0]], part


@jit(inline="always")
def _copy_into_phases(dst, src, top: int, left: int):
    """``src: (H, W)`` into a padded plane split by row and column parity, ``dst: (4, Hq,
    Wq)`` (:func:`_phase_row`), at ``(top, left)``. Row by row, one loop per column parity
    (:func:`_copy_vector`)."""
    for i in range(src.shape[0]):
        for parity in range(2):
            d, s = _phase_row(dst, src[i], top + i, left, parity)
            _copy_vector(d, s, s.shape[0])


@jit(inline="always")
def _copy_from_phases(dst, src, top: int, left: int):
    """The inverse of :func:`_copy_into_phases`: ``dst: (H, W)`` from the padded plane
    ``src: (4, Hq, Wq)`` split by parity, its padding left out."""
    for i in range(dst.shape[0]):
        for parity in range(2):
            s, d = _phase_row(src, dst[i], top + i, left, parity)
            _copy_vector(d, s, d.shape[0])


@jit(inline="always")
def _phase_views(phases, wq: int):
    """The nine taps' flat inputs at stride 2 (as :func:`_tap_views` gives them at stride 1).

    ``phases: (4, Hq, Wq)`` (see :func:`_copy_into_phases`): tap ``(a, b)`` of output
    ``p = i*Wq + j`` is padded pixel ``(2i + a, 2j + b)``, entry ``p + (a//2)*Wq + b//2`` of
    phase ``2*(a % 2) + b % 2``.
    """
    size = phases.shape[1] * phases.shape[2]
    ee, eo = phases[0].reshape(size), phases[1].reshape(size)
    oe, oo = phases[2].reshape(size), phases[3].reshape(size)
    return (ee[0:], eo[0:], ee[1:], oe[0:], oo[0:], oe[1:],
            ee[wq:], eo[wq:], ee[wq + 1:])


@_jit
def _forward_3x3_stride2(x, w, y, pt, pl, groups, hp, wp, threads):
    """Stride-2 3x3 forward without dilation, from the unpadded ``x``: nine taps per pass.

    Jobs and per-thread padding as in :func:`_forward_3x3`, with each padded plane split
    into its four phases by row and column parity (``(4, Hq, Wq)``, ``Hq = ceil(Hp/2)``,
    ``Wq = ceil(Wp/2)``): then every tap reads one phase at a constant offset, and output
    ``(i, j)`` is computed at ``i*Wq + j`` of a ``(Ho, Wq)`` scratch plane whose ``Wo`` real
    columns are copied to ``y``. Every padded pixel is read as a zero, so NaN and Inf behave
    as in the naive backend.
    """
    c_out, cg = w.shape[:2]
    ho = y.shape[2]
    cog, hq, wq = c_out // groups, (hp + 1) // 2, (wp + 1) // 2
    length = ho * wq - 1  # the last row's scratch tail would read past the phase
    pairs, jobs, chunks = _pair_runs(x.shape[0], groups, cog, threads)
    planes = np.zeros((chunks, cg, 4, hq, wq), y.dtype)  # allocated here, see _forward_3x3
    accs = np.empty((chunks, 2, ho * wq), y.dtype)
    for t in numba.prange(chunks):
        xl, acc = planes[t], accs[t]
        loaded = -1  # the (image, group) whose planes xl holds
        lo, hi = _chunk(t, chunks, jobs)
        for job in range(lo, hi):
            n, ng, o, c0, two = _pair_job(job, pairs, groups, cog, cg)
            if ng != loaded:
                for c in range(cg):
                    _copy_into_phases(xl[c], x[n, c0 + c], pt, pl)
                loaded = ng
            for c in range(cg):
                _pair_taps(acc, _phase_views(xl[c], wq), w, o, c, two, length)
            _store_pair(y[n], acc, o, two)


@jit(inline="always")
def _frame_views(frame, wq: int):
    """The four shifts of an output gradient plane that the stride-2 input gradient reads.

    ``frame: (Hq + 1, Wq)`` holds ``gy`` at ``(1, 1)`` in zeros; entry ``p = R*Wq + C`` of
    the views is ``gy[R - 1, C - 1]``, ``gy[R - 1, C]``, ``gy[R, C - 1]``, ``gy[R, C]``.
    """
    f = frame.reshape(frame.shape[0] * wq)
    return f[0:], f[1:], f[wq:], f[wq + 1:]


@jit(inline="always", fastmath=_FLAGS)
def _phase_sums(k, va, vb, vc, vd):
    """One output gradient pixel's share of the four phases of a stride-2 input gradient.

    Padded pixel ``(2R + p, 2C + q)`` is reached by the taps ``(a, b)`` with ``a % 2 == p``,
    ``b % 2 == q`` from output ``(R - a//2, C - b//2)``. ``k``: the nine taps
    (:func:`_tap_weights`); ``va, vb, vc, vd``: ``gy[R, C]``, ``gy[R, C - 1]``,
    ``gy[R - 1, C]``, ``gy[R - 1, C - 1]``. Returns the phases ``(p, q)`` = (0, 0), (0, 1),
    (1, 0), (1, 1).
    """
    k00, k01, k02, k10, k11, k12, k20, k21, k22 = k
    return (k00 * va + k02 * vb + k20 * vc + k22 * vd, k01 * va + k21 * vc,
            k10 * va + k12 * vb, k11 * va)


@jit(inline="always", fastmath=_FLAGS)
def _phase_taps_3x3(acc, views, k, length: int, add: bool):
    """``acc[:, p] (+)= `` :func:`_phase_sums` of ``k: (3, 3)`` and ``views[::-1][p]`` for
    ``p < length``; ``add`` False overwrites.

    ``acc: (4, L)``: the flat phases (row parity, column parity) of a padded input gradient
    plane, ``(R, C)`` at ``R*Wq + C`` as in :func:`_copy_into_phases`; ``views``:
    :func:`_frame_views`.
    """
    d, c, b, a = views
    taps = _tap_weights(k)
    ee, eo, oe, oo = acc[0], acc[1], acc[2], acc[3]
    if add:
        for p in range(length):
            see, seo, soe, soo = _phase_sums(taps, a[p], b[p], c[p], d[p])
            ee[p] += see
            eo[p] += seo
            oe[p] += soe
            oo[p] += soo
    else:
        for p in range(length):
            ee[p], eo[p], oe[p], oo[p] = _phase_sums(taps, a[p], b[p], c[p], d[p])


@jit(inline="always", fastmath=_FLAGS)
def _phase_taps_3x3_pair(acc0, acc1, views, k0, k1, length: int, add: bool):
    """:func:`_phase_taps_3x3` for two kernels ``k0``, ``k1`` (two input channels) over the
    same ``views``: each loaded vector feeds 18 multiply-adds instead of 9."""
    d, c, b, a = views
    taps0, taps1 = _tap_weights(k0), _tap_weights(k1)
    ee, eo, oe, oo = acc0[0], acc0[1], acc0[2], acc0[3]
    fe, fo, pe, po = acc1[0], acc1[1], acc1[2], acc1[3]
    if add:
        for p in range(length):
            va, vb, vc, vd = a[p], b[p], c[p], d[p]
            see, seo, soe, soo = _phase_sums(taps0, va, vb, vc, vd)
            tee, teo, toe, too = _phase_sums(taps1, va, vb, vc, vd)
            ee[p] += see
            eo[p] += seo
            oe[p] += soe
            oo[p] += soo
            fe[p] += tee
            fo[p] += teo
            pe[p] += toe
            po[p] += too
    else:
        for p in range(length):
            va, vb, vc, vd = a[p], b[p], c[p], d[p]
            ee[p], eo[p], oe[p], oo[p] = _phase_sums(taps0, va, vb, vc, vd)
            fe[p], fo[p], pe[p], po[p] = _phase_sums(taps1, va, vb, vc, vd)


@_jit
def _backward_input_3x3_stride2(gy, w, gx, pt, pl, groups, threads):
    """Stride-2 3x3 input gradient without dilation, for finite ``w`` (the caller checks).

    The padded input gradient split by row and column parity (:func:`_copy_into_phases`) is
    four stride-1 correlations of ``gy`` with the 2x2, 2x1, 1x2 and 1x1 sub-kernels of taps
    of matching parity (:func:`_phase_taps_3x3`), all four computed in one pass over each
    output gradient plane. Jobs are (image, pair of input channels of a group), cut into
    one contiguous run per thread as in :func:`_forward_3x3`. A thread frames the group's
    ``Cout/G`` output gradient planes in zeros in its own ``(Hq + 1, Wq)`` scratch (once per
    image and group; ``Hq = ceil((pt + H)/2)`` phase rows cover the padded rows up to the
    image's last, ``Wq`` likewise plus one scratch column), accumulates the phases of the
    pair into ``(4, Hq, Wq)`` planes and interleaves their image pixels into ``gx``. The
    frame's zeros meet the weights, hence finite ``w``; output gradient rows and columns
    that reach only the bottom/right padding are not copied.
    """
    n_img, _, h, wd = gx.shape
    c_out, cg = w.shape[:2]
    cog = c_out // groups
    hq, wq = (pt + h + 1) // 2, (pl + wd + 1) // 2 + 1
    rows, cols = min(gy.shape[2], hq), min(gy.shape[3], wq - 1)
    length = hq * wq - 1  # the last position is a scratch column; its tap would overrun
    pairs, jobs, chunks = _pair_runs(n_img, groups, cg, threads)
    frames = np.zeros((chunks, cog, hq + 1, wq), gx.dtype)  # allocated here, see _forward_3x3
    accs = np.empty((chunks, 2, 4, hq, wq), gx.dtype)
    for t in numba.prange(chunks):
        fl, acc0, acc1 = frames[t], accs[t, 0], accs[t, 1]
        flat0, flat1 = acc0.reshape(4, hq * wq), acc1.reshape(4, hq * wq)
        loaded = -1  # the (image, group) whose output gradient planes fl holds
        lo, hi = _chunk(t, chunks, jobs)
        for job in range(lo, hi):
            n, ng, ci, o0, two = _pair_job(job, pairs, groups, cg, cog)
            if ng != loaded:
                for o in range(cog):
                    _copy_into(fl[o], gy[n, o0 + o, :rows, :cols], 1, 1)
                loaded = ng
            c = ci - (ci // cg) * cg  # ci's index in its group
            for o in range(cog):
                views = _frame_views(fl[o], wq)
                if two:
                    _phase_taps_3x3_pair(flat0, flat1, views, w[o0 + o, c], w[o0 + o, c + 1],
                                         length, o > 0)
                else:
                    _phase_taps_3x3(flat0, views, w[o0 + o, c], length, o > 0)
            _copy_from_phases(gx[n, ci], acc0, pt, pl)
            if two:
                _copy_from_phases(gx[n, ci + 1], acc1, pt, pl)


@_jit
def _backward_weight_3x3_stride2(x, gy, gw, pt, pl, groups, hp, wp, threads):
    """Stride-2 3x3 weight gradient without dilation, for finite ``x`` (the caller checks).

    :func:`_backward_weight_3x3` on the phase-split planes of :func:`_forward_3x3_stride2`:
    each pair's output gradient is widened to ``(Ho, Wq)`` with zero scratch columns, which
    meet real inputs (hence finite ``x``), and each tap's sum is one long dot product
    against :func:`_phase_views`.
    """
    c_out, cg = gw.shape[:2]
    ho = gy.shape[2]
    cog, hq, wq = c_out // groups, (hp + 1) // 2, (wp + 1) // 2
    length = ho * wq - 1  # the last position is a scratch column; its tap would overrun
    pairs, jobs, chunks = _pair_runs(1, groups, cog, threads)  # each run goes over every image
    planes = np.zeros((chunks, cg, 4, hq, wq), gw.dtype)  # allocated here, see _forward_3x3
    wides = np.zeros((chunks, 2, ho, wq), gw.dtype)
    for t in numba.prange(chunks):
        xl, g0, g1 = planes[t], wides[t, 0], wides[t, 1]
        wide = wides[t].reshape(2, ho * wq)
        lo, hi = _chunk(t, chunks, jobs)
        for n in range(x.shape[0]):
            loaded = -1  # the group whose input planes xl holds
            for job in range(lo, hi):
                g, o, c0, two = _group_pair(job, pairs, cog, cg)
                if g != loaded:
                    for c in range(cg):
                        _copy_into_phases(xl[c], x[n, c0 + c], pt, pl)
                    loaded = g
                _copy_into(g0, gy[n, o], 0, 0)
                if two:
                    _copy_into(g1, gy[n, o + 1], 0, 0)
                for c in range(cg):
                    _pair_dots(gw, wide, _phase_views(xl[c], wq), o, c, two, length)


def forward(x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``y: (N, Cout, Ho, Wo)`` from the unpadded ``x: (N, C, H, W)``
    (:func:`_forward_3x3_stride2`)."""
    y = np.empty(geom.output_shape, geom.dtype)
    pt, _, pl, _ = geom.padding
    _forward_3x3_stride2(x, weight, y, pt, pl, geom.groups, *geom.padded_size,
                         numba.get_num_threads())
    return y


def backward_input(grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``grad_x: (N, C, H, W)`` from ``grad_output: (N, Cout, Ho, Wo)``; finite weights only
    (:func:`_backward_input_3x3_stride2`)."""
    grad_x = np.empty(geom.input_shape, geom.dtype)
    pt, _, pl, _ = geom.padding
    _backward_input_3x3_stride2(grad_output, weight, grad_x, pt, pl, geom.groups,
                                numba.get_num_threads())
    return grad_x


def backward_weight(x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``grad_w: (Cout, C/G, 3, 3)``; finite ``x`` only (:func:`_backward_weight_3x3_stride2`)."""
    grad_w = np.zeros(geom.weight_shape, geom.dtype)
    pt, _, pl, _ = geom.padding
    _backward_weight_3x3_stride2(x, grad_output, grad_w, pt, pl, geom.groups,
                                 *geom.padded_size, numba.get_num_threads())
    return grad_w


def workspace_bytes(geom: ConvGeometry, method: str) -> int:
    """The per-thread scratch the kernels allocate, as they size it (one run of jobs per
    thread at most): the ``Cg`` phase-split padded planes ``(4, Hq, Wq)`` and two ``(Ho, Wq)``
    planes (forward, weight gradient); the group's ``Cout/G`` framed output gradient planes
    and two phase-split accumulators (input gradient)."""
    n, g, itemsize = geom.batch, geom.groups, geom.dtype.itemsize
    (h, w), (ho, _), (hp, wp) = geom.in_size, geom.out_size, geom.padded_size
    cog, cg = geom.out_channels // g, geom.weight_shape[1]
    if method == "backward_input":
        pt, _, pl, _ = geom.padding
        hq, wq = (pt + h + 1) // 2, (pl + w + 1) // 2 + 1
        per_run = cog * (hq + 1) * wq + 2 * 4 * hq * wq
        return thread_runs(n, g, cg) * per_run * itemsize
    hq, wq = (hp + 1) // 2, (wp + 1) // 2
    per_run = cg * 4 * hq * wq + 2 * ho * wq
    return thread_runs(n if method == "forward" else 1, g, cog) * per_run * itemsize
