"""Which kernel family runs a call of the numba backend: the rules, in one table.

For each operation the rules of :data:`RULES` are tried in order and the first that holds
wins (the last always holds):

=================  ==================================================  ===================
operation          geometry (and operand that must be finite)          family
=================  ==================================================  ===================
forward            3x3, stride 1                                       ``three_by_three``
                   stride 1                                            ``wide``
                   3x3, stride 2, no dilation                          ``stride_two``
                   stride > 1, no dilation, at most 4 input channels   ``vector_rows``
                   per group
                   stride > 1, no dilation                             ``phases``
                   anything                                            ``general``
backward_input     3x3, stride 2, no dilation (finite weight)          ``stride_two``
                   3x3, stride 1, padding within ``d*(k-1)``           ``three_by_three``
                   (finite weight)
                   stride 1 (finite weight)                            ``wide``
                   stride > 1, no dilation                             ``phases``
                   anything                                            ``general``
backward_weight    3x3, stride 1                                       ``three_by_three``
                   stride 1 (finite input)                             ``wide``
                   3x3, stride 2, no dilation (finite input)           ``stride_two``
                   stride > 1, no dilation                             ``phases``
                   anything                                            ``general``
=================  ==================================================  ===================

Why the finite operands: the fast gradient kernels pass zeros (scratch columns, a zero
frame or padding) through their sums, and ``0 * Inf`` is NaN where the exact sum has none.
The input gradient's zeros meet the weight, the weight gradient's the input; the forward
pass drops its scratch columns, and the stride-1 3x3 weight gradient checks each input
plane itself. A non-finite operand moves the call down the table: stride 1 to
``general`` (row by row, exact), stride 2 to ``phases``.

``vector_rows`` (which ``wide`` also runs for its undilated forward passes) keeps two
output rows' sums in registers; at a stride it reads the input split by column phase. It
takes strided layers of few channels per group but 3x3 stride 2 (the 7x7 stride-2 stem of
RGB images, 5x5 stride-2 depthwise layers): with many channels it reads every input plane
once per output channel, where ``stride_two`` and ``phases`` share loads between output
channels (8x64x56x56 3x3 stride 2, 64->128: 25-28 against 8.8 ms), and ``stride_two`` ran
3x3 stride-2 depthwise layers 1.2x as fast (``convkit bench``, two rounds).

``phases`` runs a strided convolution as a sum of stride-1 convolutions of the input's
phases, each of which goes through this table again (as stride 1: ``three_by_three``,
``wide`` or ``general``). ``general`` takes strided dilated layers and the non-finite cases
above.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

from convkit.geometry import ConvGeometry
from convkit_backends._common import padding_within_kernel

#: Input channels per group up to which strided forward passes run ``vector_rows``.
FEW_CHANNELS = 4


class Family(enum.Enum):
    """A kernel family: the module of :mod:`convkit_backends.numba_direct` that runs it."""

    THREE_BY_THREE = "three_by_three"
    STRIDE_TWO = "stride_two"
    WIDE = "wide"
    VECTOR_ROWS = "vector_rows"
    PHASES = "phases"
    GENERAL = "general"


@dataclass(frozen=True)
class Rule:
    """Run ``family`` if ``applies(geom)`` and, when ``finite_operand``, the operand is
    finite (the weight for ``backward_input``, the input for ``backward_weight``)."""

    family: Family
    applies: Callable[[ConvGeometry], bool]
    finite_operand: bool = False


def _unit_stride(geom: ConvGeometry) -> bool:
    return geom.stride == (1, 1)


def _three_by_three(geom: ConvGeometry) -> bool:
    return geom.stride == (1, 1) and geom.kernel_size == (3, 3)


def _three_by_three_within(geom: ConvGeometry) -> bool:
    return _three_by_three(geom) and padding_within_kernel(geom)


def _stride_two(geom: ConvGeometry) -> bool:
    return (geom.kernel_size, geom.stride, geom.dilation) == ((3, 3), (2, 2), (1, 1))


def _strided_undilated(geom: ConvGeometry) -> bool:
    return geom.stride != (1, 1) and geom.dilation == (1, 1)


def _strided_few_channels(geom: ConvGeometry) -> bool:
    return _strided_undilated(geom) and geom.weight_shape[1] <= FEW_CHANNELS


def _anything(geom: ConvGeometry) -> bool:
    return True


_PHASES = Rule(Family.PHASES, _strided_undilated)
_GENERAL = Rule(Family.GENERAL, _anything)

#: operation -> its rules, in order (see the module docstring).
RULES: dict[str, tuple[Rule, ...]] = {
    "forward": (
        Rule(Family.THREE_BY_THREE, _three_by_three),
        Rule(Family.WIDE, _unit_stride),
        Rule(Family.STRIDE_TWO, _stride_two),
        Rule(Family.VECTOR_ROWS, _strided_few_channels),
        _PHASES,
        _GENERAL,
    ),
    "backward_input": (
        Rule(Family.STRIDE_TWO, _stride_two, finite_operand=True),
        Rule(Family.THREE_BY_THREE, _three_by_three_within, finite_operand=True),
        Rule(Family.WIDE, _unit_stride, finite_operand=True),
        _PHASES,
        _GENERAL,
    ),
    "backward_weight": (
        Rule(Family.THREE_BY_THREE, _three_by_three),
        Rule(Family.WIDE, _unit_stride, finite_operand=True),
        Rule(Family.STRIDE_TWO, _stride_two, finite_operand=True),
        _PHASES,
        _GENERAL,
    ),
}


def choose_kernel(
    method: str, geom: ConvGeometry, operand_is_finite: Callable[[], bool]
) -> Family:
    """The family that runs ``method`` for ``geom``: the first rule of :data:`RULES` that
    holds. ``operand_is_finite`` is asked at most once, and only if a rule needs it."""
    finite = None
    for rule in RULES[method]:
        if not rule.applies(geom):
            continue
        if rule.finite_operand:
            if finite is None:
                finite = operand_is_finite()
            if not finite:
                continue
        return rule.family
    raise AssertionError("the last rule always holds")  # pragma: no cover


def candidate_rules(method: str, geom: ConvGeometry) -> list[Rule]:
    """The rules that may run ``method`` for ``geom``, whatever the values: those that hold
    up to the first that needs no finite operand."""
    rules = []
    for rule in RULES[method]:
        if rule.applies(geom):
            rules.append(rule)
            if not rule.finite_operand:
                return rules
    raise AssertionError("the last rule always holds")  # pragma: no cover


def finite_check_bytes(method: str, geom: ConvGeometry) -> int:
    """The bool array of ``np.isfinite(operand)``: one byte per element of the weight
    (``backward_input``) or the input (``backward_weight``)."""
    shape = geom.weight_shape if method == "backward_input" else geom.input_shape
    return math.prod(shape)
