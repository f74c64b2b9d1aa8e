"""Shared pieces of the numba kernels: compile flags, job numbering, inline copies and sums.

Every kernel of the package is compiled with ``_jit``: parallel, GIL released, lazily per
dtype and cached on disk (see :mod:`._runtime`, which also keeps idle OpenMP threads from
spinning). Accumulators take the array's dtype, so float32 stays float32; fastmath only as
``{'contract', 'reassoc'}`` (NaN and Inf behave as in the other backends). The helpers here
are inlined into the kernels (``inline="always"``).
"""

from __future__ import annotations

import numba

from convkit_backends.numba_direct._runtime import jit, quiet_idle_threads

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


def pair_runs(images: int, groups: int, channels: int, threads: int) -> tuple[int, int, int]:
    """How the 3x3 kernels cut their work: ``pairs`` of the ``channels`` per group (a group's
    last pair may be single: :func:`_group_pair`), ``jobs = images * groups * pairs``
    (:func:`_pair_job`), cut into ``runs`` contiguous runs, at most ``threads``
    (:func:`_chunk`). Returns ``(pairs, jobs, runs)``."""
    pairs = (channels + 1) // 2
    jobs = images * groups * pairs
    return pairs, jobs, min(threads, jobs)


#: :func:`pair_runs` inlined into the kernels.
_pair_runs = jit(inline="always")(pair_runs)


@jit(inline="always")
def _zeroed_plane(a, n: int, c: int):
    """``a[n, c]`` flattened (a view), set to zero."""
    plane = a[n, c].reshape(a.shape[2] * a.shape[3])
    plane[:] = 0
    return plane


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


@jit(inline="always", fastmath=_FLAGS)
def _axpy(dst, src, alpha, length: int):
    """``dst[p] += alpha * src[p]`` for ``p < length`` (1-D views, vectorised)."""
    for p in range(length):
        dst[p] += alpha * src[p]


@jit(inline="always", fastmath=_FLAGS)
def _all_finite(a) -> bool:
    """True if every value of the flat ``a`` is finite.

    ``v - v`` is 0 for finite ``v`` and NaN otherwise (and keeps ``a``'s dtype, where
    ``v * 0`` made float32 float64); 'reassoc' vectorises the sum of them and does not
    assume finite values, so one pass checks the plane.
    """
    check = a[0] - a[0]
    for p in range(1, a.shape[0]):
        check += a[p] - a[p]
    return check == 0


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


def thread_runs(images: int, groups: int, channels: int) -> int:
    """How many runs of jobs the 3x3 kernels cut on numba's threads (each allocates scratch
    for its run): :func:`pair_runs`."""
    return pair_runs(images, groups, channels, numba.get_num_threads())[2]
