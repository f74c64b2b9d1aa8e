"""The cases of the conformance suite: PyTorch's own ``sample_inputs_conv2d`` cases, convkit's
sweep of the corners an implementation gets wrong, and cases for fast 3x3 algorithms.

Shapes and parameters only (:class:`~convkit.workload.ConvCase`); :mod:`convkit.testing`
runs them and re-exports these names.
"""

from __future__ import annotations

from convkit.workload import ConvCase


def _pt(*args: object, **kwargs: object) -> ConvCase:
    return ConvCase(*args, source="torch sample_inputs_conv2d", **kwargs)  # type: ignore[misc]


#: PyTorch's own ``sample_inputs_conv2d`` cases (batched forms; the duplicate case once).
TORCH_SAMPLE_CASES: tuple[ConvCase, ...] = (
    _pt("pt-stride2-pad2", (1, 3, 4, 4), (3, 3, 3, 3), stride=(2, 2), padding=2),
    _pt("pt-groups2-dil4", (2, 4, 8, 8), (2, 2, 3, 3), stride=(3, 2), padding=(2, 1), groups=2,
        dilation=(4, 4)),
    _pt("pt-dil23", (1, 4, 5, 5), (1, 4, 2, 3), stride=2, padding=1, dilation=(2, 3)),
    _pt("pt-rect-kernel", (1, 2, 4, 3), (4, 2, 3, 4), stride=2, padding=1),
    _pt("pt-valid", (1, 4, 5, 5), (1, 4, 2, 3), stride=2, padding="valid"),
    _pt("pt-same-dil3", (1, 4, 5, 5), (1, 4, 2, 3), padding="same", dilation=3),
    _pt("pt-depthwise", (2, 4, 6, 6), (4, 1, 3, 3), groups=4),
    _pt("pt-depthwise-x2", (2, 4, 6, 6), (8, 1, 3, 3), groups=4),
    _pt("pt-depthwise-stride32", (2, 4, 6, 6), (4, 1, 3, 3), groups=4, stride=(3, 2)),
    _pt("pt-depthwise-pad1", (2, 4, 6, 6), (4, 1, 3, 3), groups=4, padding=(1, 1)),
    _pt("pt-depthwise-dil2", (2, 4, 5, 5), (4, 1, 2, 2), groups=4, dilation=(2, 2)),
    _pt("pt-groups2", (2, 4, 6, 5), (6, 2, 3, 2), groups=2),
    _pt("pt-defaults", (1, 4, 5, 5), (3, 4, 3, 3)),
)

#: convkit's sweep of the corners an implementation gets wrong.
SWEEP_CASES: tuple[ConvCase, ...] = (
    ConvCase("batch1-1x1", (1, 3, 5, 4), (2, 3, 1, 1)),
    ConvCase("one-channel", (3, 1, 7, 7), (2, 1, 3, 3), padding=1),
    ConvCase("one-channel-out", (2, 5, 6, 6), (1, 5, 3, 3)),
    ConvCase("pointwise", (2, 8, 5, 5), (4, 8, 1, 1)),
    ConvCase("pointwise-stride2", (2, 6, 7, 7), (5, 6, 1, 1), stride=2),
    ConvCase("dense-3x3", (4, 16, 10, 10), (8, 16, 3, 3), padding=1),
    ConvCase("depthwise", (2, 6, 7, 7), (6, 1, 3, 3), padding=1, groups=6),
    ConvCase("depthwise-x2-stride2", (2, 3, 8, 8), (6, 1, 3, 3), stride=2, padding=1, groups=3),
    ConvCase("groups3-mixed", (2, 6, 7, 6), (9, 2, 3, 3), padding=(2, 0), dilation=(2, 1),
             groups=3),
    ConvCase("rect-kernel", (2, 3, 7, 9), (4, 3, 2, 5), padding=(1, 2)),
    ConvCase("kernel-equals-padded-input", (2, 2, 3, 4), (3, 2, 5, 6), padding=1),
    ConvCase("stride-larger-than-kernel", (2, 3, 10, 11), (4, 3, 2, 2), stride=(3, 4)),
    ConvCase("uncovered-last-rows", (1, 2, 8, 8), (2, 2, 3, 3), stride=3),
    ConvCase("uncovered-with-padding", (2, 2, 9, 10), (3, 2, 2, 3), stride=(4, 3), padding=1),
    ConvCase("same-even-kernel", (2, 3, 6, 7), (4, 3, 4, 2), padding="same"),
    ConvCase("same-even-dilated", (1, 2, 7, 6), (2, 2, 2, 4), padding="same", dilation=2),
    ConvCase("asymmetric-stride-dilation", (2, 3, 11, 9), (4, 3, 3, 2), stride=(1, 2),
             padding=(0, 3), dilation=(3, 1)),
    ConvCase("noncontiguous", (2, 4, 6, 7), (6, 2, 3, 3), padding=1, groups=2,
             noncontiguous=True),
    ConvCase("noncontiguous-strided", (3, 3, 9, 8), (4, 3, 3, 2), stride=2, dilation=(1, 2),
             noncontiguous=True),
)

CONFORMANCE_CASES: tuple[ConvCase, ...] = TORCH_SAMPLE_CASES + SWEEP_CASES

#: 3x3 stride-1 cases with 8 or more channels, for fast 3x3 algorithms (Winograd), which
#: the cases above rarely reach: sizes not divisible by 2 or 4, batch 1, padding 0 to 3,
#: rectangular images, more outputs than inputs, and one few-channel case. Not part of
#: :data:`CONFORMANCE_CASES` (``convkit check`` does not run them); pass them to
#: :class:`ConformanceCheck` yourself.
WINOGRAD_CASES: tuple[ConvCase, ...] = (
    ConvCase("wg-pad1-odd", (2, 8, 7, 9), (8, 8, 3, 3), padding=1),
    ConvCase("wg-valid", (1, 9, 10, 11), (12, 9, 3, 3)),
    ConvCase("wg-pad-0-3", (3, 8, 13, 6), (8, 8, 3, 3), padding=(0, 3)),
    ConvCase("wg-pad2-wide", (2, 10, 5, 17), (9, 10, 3, 3), padding=2),
    ConvCase("wg-pad3-small", (1, 8, 3, 3), (8, 8, 3, 3), padding=3),
    ConvCase("wg-same-more-out", (2, 8, 12, 12), (16, 8, 3, 3), padding="same"),
    ConvCase("wg-32-channels", (2, 32, 16, 15), (24, 32, 3, 3), padding=1),
    ConvCase("wg-few-channels", (2, 3, 9, 9), (5, 3, 3, 3), padding=1),
    ConvCase("wg-noncontiguous", (2, 8, 6, 7), (8, 8, 3, 3), padding=1, noncontiguous=True),
)
