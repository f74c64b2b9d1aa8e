"""auto's rule: the backend for a call that is not measured, and when a call is measured.

A call is measured (:func:`worth_tuning`) when its forward pass costs at least
:data:`TUNE_MIN_FLOPS` floating-point operations (2e7: about 0.1-1 ms on two cores). Below
that, a call's time is mostly fixed overhead (tens of microseconds either way), and
measuring it would cost more than the best choice could ever save. Smaller calls, every
call under ``CONVKIT_AUTOTUNE=off``, and the starting point of every measurement follow
:func:`rule_choice`, written from ``convkit bench --suite standard`` on the project's
2-core machine (issue 13): numba's direct loops win 3x3 layers (stride 1, and stride 2
without dilation), depthwise layers and layers with few input channels per group and small
kernels; im2col + GEMM wins everything GEMM-shaped (1x1, 5x5 and larger dense kernels, the
7x7 stride-2 stem).

Fallback: when the rule's backend is not a candidate (not installed, not allowed by the
precision policy, not supporting the call, excluded by the user), the first candidate of
:data:`PREFERENCE`, then the remaining candidates by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from convkit.geometry import ConvGeometry

#: Forward FLOPs from which a call is measured (each gradient costs as much).
TUNE_MIN_FLOPS = 20_000_000
#: Order in which the built-ins stand in for each other.
PREFERENCE: tuple[str, ...] = ("im2col-strided", "numba", "im2col-take")
#: Input channels per group up to which a layer counts as "few-channel" ...
FEW_CHANNELS = 4
#: ... when its kernel has at most this many taps (the 7x7 stem, 49 taps, is GEMM-shaped).
FEW_CHANNEL_TAPS = 25


def worth_tuning(geom: ConvGeometry) -> bool:
    """Whether a call is costly enough to measure (see :data:`TUNE_MIN_FLOPS`)."""
    return geom.flops >= TUNE_MIN_FLOPS


def rule_choice(geom: ConvGeometry, candidates: Sequence[str]) -> tuple[str, str]:
    """The rule's backend among ``candidates`` (non-empty) for ``geom``, and why.

    The operation does not change the rule: both gradients have the forward pass's shape of
    work and the same winners in the measurements it was written from.
    """
    preferred, why = _preferred(geom)
    if preferred in candidates:
        return preferred, why
    order = by_preference(candidates)
    return order[0], f"{why}, but {preferred!r} is not a candidate here: the first of {order}"


def by_preference(candidates: Sequence[str]) -> list[str]:
    """``candidates`` in the order they stand in for each other: :data:`PREFERENCE`, then
    the rest by name (also the order in which near-ties are broken when measuring)."""
    return [*(n for n in PREFERENCE if n in candidates),
            *sorted(n for n in candidates if n not in PREFERENCE)]


def _preferred(geom: ConvGeometry) -> tuple[str, str]:
    (kh, kw), cg = geom.kernel_size, geom.in_channels // geom.groups
    if (kh, kw) == (3, 3) and (geom.stride == (1, 1)
                               or (geom.stride == (2, 2) and geom.dilation == (1, 1))):
        return "numba", "rule: 3x3 stride 1 or 2 runs on numba's 3x3 kernels"
    if cg == 1 and geom.groups > 1:
        return "numba", "rule: a depthwise layer runs on numba's direct loops"
    if cg <= FEW_CHANNELS and kh * kw <= FEW_CHANNEL_TAPS and (kh, kw) != (1, 1):
        return "numba", (f"rule: at most {FEW_CHANNELS} input channels per group and "
                         f"{FEW_CHANNEL_TAPS} taps run on numba's direct loops")
    return "im2col-strided", "rule: a GEMM-shaped layer runs on im2col + BLAS"
