"""Direct convolution as numba-compiled loops: no im2col.

Each general kernel is parallel (``prange``) over an axis whose iterations write disjoint outputs:
forward over (image, output channel), input gradient over (image, input channel), weight
gradient over (output channel, input channel of the group).

Stride 1 (the common case) runs with every output row computed ``Wp`` wide (the padded
width): then each kernel tap is one long contiguous loop over a whole image plane, which
LLVM vectorises, instead of ``Ho`` short rows. The scratch columns this adds are dropped in
the forward pass; in the gradients they multiply zeros, so they are used only where that
cannot make a NaN (finite weights for the input gradient, finite inputs for the weight
gradient). General kernel sizes run on a zero-padded copy of the whole input.

3x3 kernels (the common size) have their own kernels that apply all nine taps in one pass,
for two output channels at a time (each loaded input vector feeds 18 multiply-adds). Their
jobs are cut into one contiguous run per thread, and each thread pads the planes it works
on into its own scratch, so the input is read once and never copied whole: forward over
(image, pair of output channels); weight gradient over pairs of output channels, checking
each input plane for NaN/Inf as it is padded (such a plane takes exact row sums); and the
input gradient is the forward kernel run over the output gradient with the flipped,
transposed weight.

3x3 stride-2 layers (ResNet's downsampling) have kernels of the same kind for the forward
pass and the weight gradient (:func:`_forward_3x3_stride2`,
:func:`_backward_weight_3x3_stride2`), which split each thread's padded planes by row and
column parity, and for the input gradient (:func:`_backward_input_3x3_stride2`), which
computes the four parity phases of each input gradient plane from a zero-framed copy of the
output gradient (finite weights only: the frame's zeros meet them). Other strides without
dilation, and those layers' non-finite cases, are sums of stride-1 convolutions of the
input's phases (:func:`_phases`). Strided dilated layers, and the non-finite cases above,
run row by row with loops clipped to the pixels inside the image.

Compiled lazily per dtype and cached on disk (see :mod:`convkit_backends._numba_runtime`,
which also keeps idle OpenMP threads from spinning). Accumulators take the array's dtype, so
float32 stays float32; fastmath only as ``{'contract', 'reassoc'}`` (NaN and Inf behave as
in the other backends)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numba
import numpy as np

from convkit.backend import ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends._common import crop, pad
from convkit_backends._nonfinite import forward_padding_nan, weight_grad_padding_nan
from convkit_backends._numba_runtime import jit, quiet_idle_threads
from convkit_backends._numba_threads import serialised_on_unsafe_layer

quiet_idle_threads()  # before the first parallel kernel loads the OpenMP runtime
# 'contract' allows FMA and 'reassoc' lets LLVM vectorise the weight gradient's dot products;
# neither assumes finite values, so NaN and Inf propagate as in the other backends.
_FLAGS = {"contract", "reassoc"}
_jit = jit(parallel=True, nogil=True, fastmath=_FLAGS)
# Elements per iteration of the widest vectorised loop (16 float32 lanes, unrolled twice).
_STEP = 32


@jit(inline="always")
def _valid_range(pad: int, offset: int, stride: int, size: int, out_size: int):
    """Outputs ``o`` in ``[lo, hi)`` with ``0 <= o*stride - pad + offset < size``."""
    start = pad - offset  # o*stride >= start
    lo = 0 if start <= 0 else (start + stride - 1) // stride
    stop = size + pad - offset  # o*stride < stop
    hi = 0 if stop <= 0 else (stop + stride - 1) // stride
    return lo, min(hi, out_size)


@jit(inline="always")
def _first_input_channel(o: int, c_out: int, cg: int, groups: int) -> int:
    """The first of the ``cg`` input channels that output channel ``o`` reads."""
    return (o // (c_out // groups)) * cg


@jit(inline="always")
def _output_job(job: int, c_out: int, cg: int, groups: int):
    """Forward job ``job`` of ``N*Cout``: image ``n``, output ``o``, its first input channel."""
    o = job % c_out
    return job // c_out, o, _first_input_channel(o, c_out, cg, groups)


@jit(inline="always")
def _group_of_input(ci: int, cg: int, cog: int):
    """Input channel ``ci``'s index ``c`` in its group and the group's outputs ``[lo, hi)``."""
    g = ci // cg
    return ci % cg, g * cog, (g + 1) * cog


@jit(inline="always")
def _zeroed_plane(a, n: int, c: int):
    """``a[n, c]`` flattened (a view), set to zero."""
    plane = a[n, c].reshape(a.shape[2] * a.shape[3])
    plane[:] = 0
    return plane


@jit(inline="always", fastmath=_FLAGS)
def _axpy(dst, src, alpha, length: int):
    """``dst[p] += alpha * src[p]`` for ``p < length`` (1-D views, vectorised)."""
    for p in range(length):
        dst[p] += alpha * src[p]


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
    for job in numba.prange(n_img * c_out):
        n, o, c0 = _output_job(job, c_out, cg, groups)
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


@jit(inline="always")
def _chunk(t: int, chunks: int, jobs: int):
    """Jobs ``[lo, hi)`` of chunk ``t`` when ``jobs`` are cut into ``chunks`` contiguous runs."""
    return t * jobs // chunks, (t + 1) * jobs // chunks


@jit(inline="always")
def _group_pair(gq: int, pairs: int, cog: int, cg: int):
    """Pair ``gq`` of output channels, numbered group by group (``pairs`` per group): its
    group ``g``, first output ``o``, the group's first input channel ``c0``, and whether
    output ``o + 1`` belongs to it too (a group's last pair may be single)."""
    g, q = gq // pairs, gq % pairs
    return g, g * cog + 2 * q, g * cg, 2 * q + 1 < cog


@jit(inline="always")
def _pair_job(job: int, pairs: int, groups: int, cog: int, cg: int):
    """Forward job ``job``, numbered (image, group, pair of output channels): its image
    ``n``, ``(image, group)`` index ``ng``, and ``o, c0, two`` as :func:`_group_pair` gives
    them."""
    ng = job // pairs
    _, o, c0, two = _group_pair(job % (groups * pairs), pairs, cog, cg)
    return ng // groups, ng, o, c0, two


@jit(inline="always")
def _copy_vector(dst, src, length: int):
    """``dst[:length] = src[:length]`` for 1-D views, as a plain loop (vectorised)."""
    for j in range(length):
        dst[j] = src[j]


@jit(inline="always")
def _copy_into(dst, src, top: int, left: int):
    """``dst[top:top + H, left:left + W] = src`` for ``src: (H, W)``, row by row."""
    h, wd = src.shape
    for i in range(h):
        _copy_vector(dst[top + i, left:left + wd], src[i], wd)


@jit(inline="always")
def _copy_rows(dst, wide):
    """``dst[i, j] = wide[i*Wp + j]``: the ``(H, W)`` real columns of a flat ``(H, Wp)`` plane."""
    h, wd = dst.shape
    wp = wide.shape[0] // h
    for i in range(h):
        _copy_vector(dst[i], wide[i * wp:], wd)


@jit(inline="always")
def _tap_views(s, r1: int, r2: int, b1: int, b2: int):
    """The nine views ``s[r + b:]``, ``r`` in ``(0, r1, r2)``, ``b`` in ``(0, b1, b2)``, row-major.

    One view per tap, indexed by ``p`` alone: offsets in the index defeat vectorising.
    """
    return (s[0:], s[b1:], s[b2:], s[r1:], s[r1 + b1:], s[r1 + b2:],
            s[r2:], s[r2 + b1:], s[r2 + b2:])


@jit(inline="always")
def _tap_weights(k):
    """The nine entries of ``k: (3, 3)``, row-major."""
    return k[0, 0], k[0, 1], k[0, 2], k[1, 0], k[1, 1], k[1, 2], k[2, 0], k[2, 1], k[2, 2]


@jit(inline="always", fastmath=_FLAGS)
def _taps_3x3(acc, views, k, length: int, add: bool):
    """``acc[p] (+)= sum k[a, b] * views[3*a + b][p]`` for ``p < length``.

    ``acc``: a flat plane; ``views``: the nine taps' flat inputs (:func:`_tap_views`);
    ``k: (3, 3)``. ``add`` False overwrites ``acc`` (no zeroing pass, no accumulator load).
    """
    s00, s01, s02, s10, s11, s12, s20, s21, s22 = views
    k00, k01, k02, k10, k11, k12, k20, k21, k22 = _tap_weights(k)
    if add:
        for p in range(length):
            acc[p] += (k00 * s00[p] + k01 * s01[p] + k02 * s02[p]
                       + k10 * s10[p] + k11 * s11[p] + k12 * s12[p]
                       + k20 * s20[p] + k21 * s21[p] + k22 * s22[p])
    else:
        for p in range(length):
            acc[p] = (k00 * s00[p] + k01 * s01[p] + k02 * s02[p]
                      + k10 * s10[p] + k11 * s11[p] + k12 * s12[p]
                      + k20 * s20[p] + k21 * s21[p] + k22 * s22[p])


@jit(inline="always", fastmath=_FLAGS)
def _taps_3x3_pair(acc0, acc1, views, k0, k1, length: int, add: bool):
    """:func:`_taps_3x3` for two kernels ``k0``, ``k1`` over the same ``views``.

    Each input vector feeds 18 multiply-adds instead of 9: the loop is bound by arithmetic,
    not by loads (measured 1.5x faster per output than two single passes).
    """
    s00, s01, s02, s10, s11, s12, s20, s21, s22 = views
    k00, k01, k02, k10, k11, k12, k20, k21, k22 = _tap_weights(k0)
    l00, l01, l02, l10, l11, l12, l20, l21, l22 = _tap_weights(k1)
    if add:  # two loops: a branch inside one was measured to stop it being vectorised
        for p in range(length):
            v00, v01, v02 = s00[p], s01[p], s02[p]
            v10, v11, v12 = s10[p], s11[p], s12[p]
            v20, v21, v22 = s20[p], s21[p], s22[p]
            acc0[p] += (k00 * v00 + k01 * v01 + k02 * v02 + k10 * v10 + k11 * v11
                        + k12 * v12 + k20 * v20 + k21 * v21 + k22 * v22)
            acc1[p] += (l00 * v00 + l01 * v01 + l02 * v02 + l10 * v10 + l11 * v11
                        + l12 * v12 + l20 * v20 + l21 * v21 + l22 * v22)
    else:
        for p in range(length):
            v00, v01, v02 = s00[p], s01[p], s02[p]
            v10, v11, v12 = s10[p], s11[p], s12[p]
            v20, v21, v22 = s20[p], s21[p], s22[p]
            acc0[p] = (k00 * v00 + k01 * v01 + k02 * v02 + k10 * v10 + k11 * v11
                       + k12 * v12 + k20 * v20 + k21 * v21 + k22 * v22)
            acc1[p] = (l00 * v00 + l01 * v01 + l02 * v02 + l10 * v10 + l11 * v11
                       + l12 * v12 + l20 * v20 + l21 * v21 + l22 * v22)


@jit(inline="always")
def _pair_taps(acc, views, w, o: int, c: int, two: bool, length: int):
    """Input channel ``c``'s nine taps into ``acc[0]`` for output ``o`` and, if ``two``,
    ``acc[1]`` for output ``o + 1`` (:func:`_taps_3x3`); channel 0 overwrites."""
    if two:
        _taps_3x3_pair(acc[0], acc[1], views, w[o, c], w[o + 1, c], length, c > 0)
    else:
        _taps_3x3(acc[0], views, w[o, c], length, c > 0)


@jit(inline="always")
def _store_pair(y_n, acc, o: int, two: bool):
    """The real columns of ``acc[0]`` into output plane ``o`` of ``y_n: (Cout, Ho, Wo)``
    and, if ``two``, of ``acc[1]`` into plane ``o + 1`` (:func:`_copy_rows`)."""
    _copy_rows(y_n[o], acc[0])
    if two:
        _copy_rows(y_n[o + 1], acc[1])


@_jit
def _forward_3x3(x, w, y, pt, pl, dh, dw, groups, hp, wp, threads):
    """Stride-1 3x3 forward from the unpadded ``x``: nine taps in one pass per channel.

    Jobs are (image, pair of output channels of a group) in order, cut into one contiguous
    run per thread (``threads`` runs at most). A thread pads the ``Cg`` input planes of the
    image and group it works on into its own ``(Cg, Hp, Wp)`` scratch (zero border written
    once; the group's next pairs reuse it), so the input is read once and no padded copy of
    it is made. Output ``(i, j)`` is computed at ``i*Wp + j`` of an ``(Ho, Wp)`` scratch
    plane, as in :func:`_forward_unit_stride`, and its ``Wo`` real columns are copied to
    ``y``. A group with an odd number of outputs (depthwise: one) ends with a single one.
    """
    n_img, _, h, wd = x.shape
    c_out, cg = w.shape[:2]
    ho, cog = y.shape[2], c_out // groups
    r1, r2, b1, b2 = dh * wp, 2 * dh * wp, dw, 2 * dw
    length = ho * wp - b2  # the last row's scratch tail would read past the plane
    padded = (hp, wp) != (h, wd)
    pairs = (cog + 1) // 2  # per group
    jobs = n_img * groups * pairs
    chunks = min(threads, jobs)
    # per-thread scratch, allocated here: arrays allocated inside prange were measured slower
    planes = np.zeros((chunks, cg if padded else 0, hp, wp), y.dtype)
    accs = np.empty((chunks, 2, ho * wp), y.dtype)
    for t in numba.prange(chunks):
        xl, acc = planes[t], accs[t]
        loaded = -1  # the (image, group) whose planes xl holds
        lo, hi = _chunk(t, chunks, jobs)
        for job in range(lo, hi):
            n, ng, o, c0, two = _pair_job(job, pairs, groups, cog, cg)
            if padded and ng != loaded:
                for c in range(cg):
                    _copy_into(xl[c], x[n, c0 + c], pt, pl)
                loaded = ng
            for c in range(cg):
                s = (xl[c] if padded else x[n, c0 + c]).reshape(hp * wp)
                _pair_taps(acc, _tap_views(s, r1, r2, b1, b2), w, o, c, two, length)
            _store_pair(y[n], acc, o, two)


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
    pairs = (cog + 1) // 2  # per group
    jobs = x.shape[0] * groups * pairs
    chunks = min(threads, jobs)
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
    pairs = (cg + 1) // 2  # per group
    jobs = n_img * groups * pairs
    chunks = min(threads, jobs)
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
def _backward_input(gy, w, gx, sh, sw, pt, pl, dh, dw, groups):
    n_img, c_in, h, wd = gx.shape
    c_out, cg, kh, kw = w.shape
    ho, wo = gy.shape[2], gy.shape[3]
    for job in numba.prange(n_img * c_in):
        n, ci = job // c_in, job % c_in
        c, o_lo, o_hi = _group_of_input(ci, cg, c_out // groups)
        acc = gx[n, ci]
        acc[:, :] = 0
        for o in range(o_lo, o_hi):
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


@jit(inline="always", fastmath=_FLAGS)
def _all_finite(a) -> bool:
    """True if every value of the flat ``a`` is finite.

    ``v * 0`` is 0 for finite ``v`` and NaN otherwise; 'reassoc' vectorises the sum of them
    and does not assume finite values, so one pass checks the plane.
    """
    check = a[0] * 0
    for p in range(1, a.shape[0]):
        check += a[p] * 0
    return check == 0


@jit(inline="always", fastmath=_FLAGS)
def _dots_3x3(k, g, views, length: int):
    """``k[a, b] += sum g[p] * views[3*a + b][p]`` for ``p < length`` (views as for
    :func:`_taps_3x3`)."""
    s00, s01, s02, s10, s11, s12, s20, s21, s22 = views
    t00, t01, t02, t10, t11, t12, t20, t21, t22 = _tap_weights(k)
    for p in range(length):
        gp = g[p]
        t00 += gp * s00[p]
        t01 += gp * s01[p]
        t02 += gp * s02[p]
        t10 += gp * s10[p]
        t11 += gp * s11[p]
        t12 += gp * s12[p]
        t20 += gp * s20[p]
        t21 += gp * s21[p]
        t22 += gp * s22[p]
    k[0, 0], k[0, 1], k[0, 2] = t00, t01, t02
    k[1, 0], k[1, 1], k[1, 2] = t10, t11, t12
    k[2, 0], k[2, 1], k[2, 2] = t20, t21, t22


@jit(inline="always", fastmath=_FLAGS)
def _dots_3x3_pair(k0, k1, g0, g1, views, length: int):
    """:func:`_dots_3x3` for two output gradients ``g0``, ``g1`` against the same ``views``:
    each input vector feeds 18 multiply-adds instead of 9."""
    s00, s01, s02, s10, s11, s12, s20, s21, s22 = views
    t00, t01, t02, t10, t11, t12, t20, t21, t22 = _tap_weights(k0)
    u00, u01, u02, u10, u11, u12, u20, u21, u22 = _tap_weights(k1)
    for p in range(length):
        v00, v01, v02 = s00[p], s01[p], s02[p]
        v10, v11, v12 = s10[p], s11[p], s12[p]
        v20, v21, v22 = s20[p], s21[p], s22[p]
        gp, gq = g0[p], g1[p]
        t00 += gp * v00
        t01 += gp * v01
        t02 += gp * v02
        t10 += gp * v10
        t11 += gp * v11
        t12 += gp * v12
        t20 += gp * v20
        t21 += gp * v21
        t22 += gp * v22
        u00 += gq * v00
        u01 += gq * v01
        u02 += gq * v02
        u10 += gq * v10
        u11 += gq * v11
        u12 += gq * v12
        u20 += gq * v20
        u21 += gq * v21
        u22 += gq * v22
    k0[0, 0], k0[0, 1], k0[0, 2] = t00, t01, t02
    k0[1, 0], k0[1, 1], k0[1, 2] = t10, t11, t12
    k0[2, 0], k0[2, 1], k0[2, 2] = t20, t21, t22
    k1[0, 0], k1[0, 1], k1[0, 2] = u00, u01, u02
    k1[1, 0], k1[1, 1], k1[1, 2] = u10, u11, u12
    k1[2, 0], k1[2, 1], k1[2, 2] = u20, u21, u22


@jit(inline="always")
def _pair_dots(gw, g, views, o: int, c: int, two: bool, length: int):
    """Add output gradient ``g[0]``'s sums with ``views`` to ``gw[o, c]`` and, if ``two``,
    ``g[1]``'s to ``gw[o + 1, c]`` (:func:`_dots_3x3`)."""
    if two:
        _dots_3x3_pair(gw[o, c], gw[o + 1, c], g[0], g[1], views, length)
    else:
        _dots_3x3(gw[o, c], g[0], views, length)


@jit(inline="always", fastmath=_FLAGS)
def _dots_rows(k, g, s, wo: int, dh: int, dw: int):
    """``k[a, b] += sum g[i, j] * s[i + a*dh, j + b*dw]`` over the ``(Ho, Wo)`` real outputs.

    ``g: (Ho, Wp)``, ``s: (Hp, Wp)``: exact, no scratch column is read (for non-finite ``s``).
    """
    for a in range(k.shape[0]):
        for b in range(k.shape[1]):
            total = k[a, b]
            for i in range(g.shape[0]):
                total = _gather_dot(g[i], s[i + a * dh], 0, wo, 1, b * dw, total)
            k[a, b] = total


@_jit
def _backward_weight_3x3(x, gy, gw, pt, pl, dh, dw, groups, hp, wp, threads):
    """Stride-1 3x3 weight gradient from the unpadded ``x`` and ``gy``: nine sums per pass.

    Jobs are pairs of output channels of a group (as in :func:`_forward_3x3`), cut into
    one contiguous run per thread. Image by image, a thread pads the group's ``Cg`` input
    planes into its own scratch (once per image and group) and widens each pair's output
    gradient planes into its own ``(2, Ho*Wp)`` scratch (zero scratch columns written
    once); then each tap's sum is one long dot product (see
    :func:`_backward_weight_unit_stride`). The zero scratch columns meet real inputs, so a
    plane holding a NaN or Inf takes exact row-by-row sums instead.
    """
    n_img, c_out, cg = x.shape[0], gw.shape[0], gw.shape[1]
    ho, wo = gy.shape[2], gy.shape[3]
    cog = c_out // groups
    r1, r2, b1, b2 = dh * wp, 2 * dh * wp, dw, 2 * dw
    # rounded up to whole vector steps: no scalar remainder loop, which was measured to cost
    # 10-20%; the extra products are zeros of the scratch tails times zeros or finite x
    length = -(-(ho * wp - b2) // _STEP) * _STEP
    pairs = (cog + 1) // 2  # per group
    jobs = groups * pairs
    chunks = min(threads, jobs)
    planes = np.zeros((chunks, cg, hp * wp + _STEP), gw.dtype)  # allocated here, see _forward_3x3
    finite = np.empty((chunks, cg), np.bool_)
    wides = np.zeros((chunks, 2, ho * wp + _STEP), gw.dtype)
    for t in numba.prange(chunks):
        xl, ok, wide = planes[t], finite[t], wides[t]  # wide: (2, Ho*Wp + _STEP), flat
        gl0, gl1 = wide[0, :ho * wp].reshape(ho, wp), wide[1, :ho * wp].reshape(ho, wp)
        lo, hi = _chunk(t, chunks, jobs)
        for n in range(n_img):
            loaded = -1  # the group whose input planes xl holds
            for job in range(lo, hi):
                g, o, c0, two = _group_pair(job, pairs, cog, cg)
                if g != loaded:
                    for c in range(cg):
                        _copy_into(xl[c, :hp * wp].reshape(hp, wp), x[n, c0 + c], pt, pl)
                        ok[c] = _all_finite(xl[c])
                    loaded = g
                _copy_into(gl0, gy[n, o], 0, 0)
                if two:
                    _copy_into(gl1, gy[n, o + 1], 0, 0)
                for c in range(cg):
                    s = xl[c]
                    if not ok[c]:
                        xs = s[:hp * wp].reshape(hp, wp)
                        _dots_rows(gw[o, c], gl0, xs, wo, dh, dw)
                        if two:
                            _dots_rows(gw[o + 1, c], gl1, xs, wo, dh, dw)
                    else:
                        _pair_dots(gw, wide, _tap_views(s, r1, r2, b1, b2), o, c, two, length)


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
    pairs = (cog + 1) // 2  # per group
    jobs = groups * pairs
    chunks = min(threads, jobs)
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


class NumbaBackend(ConvBackend):
    """Parallel direct-convolution loops compiled by numba."""

    @serialised_on_unsafe_layer
    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        y = np.empty(geom.output_shape, geom.dtype)
        if geom.stride == (1, 1) and geom.kernel_size == (3, 3):  # pads as it goes
            pt, _, pl, _ = geom.padding
            _forward_3x3(x, weight, y, pt, pl, *geom.dilation, geom.groups, *geom.padded_size,
                         numba.get_num_threads())
        elif geom.stride == (1, 1):  # scratch columns are dropped: no condition
            _forward_unit_stride(pad(x, geom), weight, y, *_unit_stride_args(geom))
        elif _is_3x3_stride2(geom):
            pt, _, pl, _ = geom.padding
            _forward_3x3_stride2(x, weight, y, pt, pl, geom.groups, *geom.padded_size,
                                 numba.get_num_threads())
        elif geom.dilation == (1, 1):
            y[...] = 0
            xp = pad(x, geom)
            for rows, cols, sub in _phases(geom):
                y += self.forward(_phase(xp, rows, cols, sub), _phase(weight, rows, cols), sub)
        else:  # clipped loops skip the padding: restore its Inf * 0 = NaN
            _forward(x, weight, y, *_loop_args(geom))
            forward_padding_nan(y, weight, geom)
        return y

    @serialised_on_unsafe_layer
    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        if _is_3x3_stride2(geom) and np.isfinite(weight).all():
            grad_x = np.empty(geom.input_shape, geom.dtype)
            pt, _, pl, _ = geom.padding
            _backward_input_3x3_stride2(grad_output, weight, grad_x, pt, pl, geom.groups,
                                        numba.get_num_threads())
            return grad_x
        finite_weight = geom.stride == (1, 1) and np.isfinite(weight).all()
        if finite_weight and geom.kernel_size == (3, 3) and _padding_within_kernel(geom):
            return _input_grad_3x3(grad_output, weight, geom)
        if finite_weight:
            grad_xp = np.empty((geom.batch, geom.in_channels, *geom.padded_size), geom.dtype)
            _backward_input_unit_stride(_widen(grad_output, geom), weight, grad_xp,
                                        *_unit_stride_args(geom))
            return np.ascontiguousarray(crop(grad_xp, geom))
        if geom.stride != (1, 1) and geom.dilation == (1, 1):
            grad_xp = np.zeros((geom.batch, geom.in_channels, *geom.padded_size), geom.dtype)
            for rows, cols, sub in _phases(geom):
                grad_phase = self.backward_input(grad_output, _phase(weight, rows, cols), sub)
                _phase(grad_xp, rows, cols, sub, copy=False)[...] = grad_phase
            return np.ascontiguousarray(crop(grad_xp, geom))
        grad_x = np.empty(geom.input_shape, geom.dtype)
        _backward_input(grad_output, weight, grad_x, *_loop_args(geom))
        return grad_x

    @serialised_on_unsafe_layer
    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        grad_w = np.zeros(geom.weight_shape, geom.dtype)
        if geom.stride == (1, 1) and geom.kernel_size == (3, 3):  # checks x as it goes
            pt, _, pl, _ = geom.padding
            _backward_weight_3x3(x, grad_output, grad_w, pt, pl, *geom.dilation, geom.groups,
                                 *geom.padded_size, numba.get_num_threads())
        elif geom.stride == (1, 1) and np.isfinite(x).all():
            _backward_weight_unit_stride(pad(x, geom), _widen(grad_output, geom), grad_w,
                                         *_unit_stride_args(geom))
        elif _is_3x3_stride2(geom) and np.isfinite(x).all():
            pt, _, pl, _ = geom.padding
            _backward_weight_3x3_stride2(x, grad_output, grad_w, pt, pl, geom.groups,
                                         *geom.padded_size, numba.get_num_threads())
        elif geom.stride != (1, 1) and geom.dilation == (1, 1):
            xp = pad(x, geom)
            for rows, cols, sub in _phases(geom):
                grad_w[:, :, rows, cols] = self.backward_weight(
                    _phase(xp, rows, cols, sub), grad_output, sub)
        else:  # clipped loops skip the padding: restore its Inf * 0 = NaN
            _backward_weight(x, grad_output, grad_w, *_loop_args(geom))
            weight_grad_padding_nan(grad_w, grad_output, geom)
        return grad_w


def _is_3x3_stride2(geom: ConvGeometry) -> bool:
    """The geometry of the phase-split kernels: 3x3, stride 2, no dilation."""
    return (geom.kernel_size, geom.stride, geom.dilation) == ((3, 3), (2, 2), (1, 1))


def _padding_within_kernel(geom: ConvGeometry) -> bool:
    """True if no side is padded by more than the kernel's extent ``d*(k-1)``."""
    (kh, kw), (dh, dw), (pt, pb, pl, pr) = geom.kernel_size, geom.dilation, geom.padding
    return max(pt, pb) <= (kh - 1) * dh and max(pl, pr) <= (kw - 1) * dw


def _input_grad_3x3(grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Stride-1 3x3 ``grad_x: (N, C, H, W)`` as :func:`_forward_3x3` of ``grad_output``.

    ``grad_x[n, c, i, j] = sum w[o, c, a, b] * gy[n, o, i + pt - a*dh, j + pl - b*dw]`` is a
    forward pass over ``gy: (N, Cout, Ho, Wo)`` with the flipped, transposed weight
    ``(C, Cout/G, 3, 3)`` and padding ``(2*dh - pt, 2*dw - pl)`` in an ``(H + 2*dh, W + 2*dw)``
    frame. Needs :func:`_padding_within_kernel` (else the frame would crop ``gy``) and finite
    weights, which the frame's zeros meet.
    """
    (dh, dw), (pt, _, pl, _), (h, w) = geom.dilation, geom.padding, geom.in_size
    g, cog, cg = geom.groups, geom.out_channels // geom.groups, geom.weight_shape[1]
    flipped = np.ascontiguousarray(
        weight.reshape(g, cog, cg, 3, 3).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    ).reshape(geom.in_channels, cog, 3, 3)
    grad_x = np.empty(geom.input_shape, geom.dtype)
    _forward_3x3(grad_output, flipped, grad_x, 2 * dh - pt, 2 * dw - pl, dh, dw, g,
                 h + 2 * dh, w + 2 * dw, numba.get_num_threads())
    return grad_x


def _loop_args(geom: ConvGeometry) -> tuple[int, ...]:
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    pt, _, pl, _ = geom.padding
    return sh, sw, pt, pl, dh, dw, geom.groups


def _widen(grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``(N, Cout, Ho, Wo)`` -> ``(N, Cout, Ho, Wp)``, zeros in the scratch columns."""
    wide = np.zeros((*grad_output.shape[:3], geom.padded_size[1]), geom.dtype)
    wide[..., :geom.out_size[1]] = grad_output
    return wide


def _unit_stride_args(geom: ConvGeometry) -> tuple[int, ...]:
    """``dh, dw, groups, length``: the flat length of an ``(Ho, Wp)`` plane that is read."""
    (dh, dw), (ho, _), (_, wp) = geom.dilation, geom.out_size, geom.padded_size
    return dh, dw, geom.groups, ho * wp - (geom.kernel_size[1] - 1) * dw


def _phases(geom: ConvGeometry) -> Iterator[tuple[slice, slice, ConvGeometry]]:
    """Stride ``(sh, sw)``, dilation 1, as ``sh*sw`` stride-1 convolutions of phases.

    Tap ``(a, b)`` reads padded row ``i*sh + a`` = ``(i + a//sh)*sh + a%sh``: the taps with
    ``a % sh == pa`` and ``b % sw == pb`` form a sub-kernel ``w[:, :, pa::sh, pb::sw]`` that
    slides with stride 1 over the phase ``xp[:, :, pa::sh, pb::sw]``, cropped to the rows and
    columns the ``(Ho, Wo)`` outputs read. The convolution is the sum over phases. Yields the
    phase's row and column slices and its unpadded stride-1 geometry.
    """
    (kh, kw), (sh, sw), (ho, wo) = geom.kernel_size, geom.stride, geom.out_size
    for pa in range(min(sh, kh)):
        for pb in range(min(sw, kw)):
            sub_k = (len(range(pa, kh, sh)), len(range(pb, kw, sw)))
            sub = replace(geom, in_size=(ho + sub_k[0] - 1, wo + sub_k[1] - 1),
                          kernel_size=sub_k, stride=(1, 1), padding=(0, 0, 0, 0))
            yield slice(pa, None, sh), slice(pb, None, sw), sub


def _phase(
    a: np.ndarray, rows: slice, cols: slice, sub: ConvGeometry | None = None, copy: bool = True
) -> np.ndarray:
    """``a[:, :, rows, cols]``, cut to ``sub.in_size`` if given; a C-ordered copy if ``copy``."""
    part = a[:, :, rows, cols]
    if sub is not None:
        part = part[:, :, :sub.in_size[0], :sub.in_size[1]]
    return np.ascontiguousarray(part) if copy else part
