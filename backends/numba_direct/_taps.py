"""The nine-tap loops of the 3x3 kernels (stride 1 and stride 2), inlined into them.

A 3x3 kernel's nine taps are applied in one pass over flat planes: :func:`_taps_3x3`
(forward: ``acc[p] += sum k[a, b] * views[3*a + b][p]``) and :func:`_dots_3x3` (weight
gradient: ``k[a, b] += sum g[p] * views[3*a + b][p]``), each also for two output channels
at a time (``_pair``: every loaded input vector feeds 18 multiply-adds instead of 9). The
views are one flat 1-D view per tap (:func:`_tap_views` at stride 1, the stride-2 kernels'
phase views), so the innermost loop indexes by ``p`` alone and vectorises.
"""

from __future__ import annotations

from convkit_backends.numba_direct._helpers import _FLAGS, _copy_rows
from convkit_backends.numba_direct._runtime import jit


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

