"""The numba backend's forward pass with two output rows' sums in registers (vector_rows)."""

from __future__ import annotations

import numpy as np
import pytest

from convkit.testing import ConvCase, check_against_naive
from convkit_backends.numba_direct import vector_rows
from convkit_backends.numba_direct._vectors import lanes


@pytest.mark.parametrize("lane_count", [4, 8])
def test_row_cover_covers_each_column_inside_the_row(lane_count: int) -> None:
    for width in range(lane_count, 300):
        starts, offsets = vector_rows.row_cover(width, lane_count)
        covered = np.zeros(width + lane_count, int)
        for start in starts:
            for offset in offsets:
                assert 0 <= start + offset <= width - lane_count, (width, starts, offsets)
                covered[start + offset:start + offset + lane_count] += 1
        assert (covered[:width] >= 1).all(), (width, starts, offsets)
        assert len(offsets) <= vector_rows._MOST_VECTORS


@pytest.mark.parametrize("lane_count", [4, 8])
def test_row_cover_computes_whole_rows_of_vectors_once(lane_count: int) -> None:
    for vectors in range(1, 4 * vector_rows._MOST_VECTORS + 1):
        starts, offsets = vector_rows.row_cover(vectors * lane_count, lane_count)
        columns = sorted(int(s) + o for s in starts for o in offsets)
        if vectors % -(-vectors // vector_rows._MOST_VECTORS) == 0:  # blocks of equal size
            assert columns == list(range(0, vectors * lane_count, lane_count))


# Each forward case runs through vector_rows (checked below): rows exactly one vector wide
# and one column more, an odd number of output rows (the last pair overlaps), rows of
# several blocks, no padding (the input read in place) and asymmetric padding, groups of
# several channels, one kernel row, 7 taps per row (its own compiled loop) and others; rows
# narrower than a vector (ConvNeXt's 7x7 maps) and a single output row (both widened).
CASES = [
    ConvCase("one-vector-rows", (2, 3, 10, 8), (4, 3, 3, 5), padding=(1, 2)),
    ConvCase("one-more-column", (1, 2, 7, 9), (2, 2, 2, 3), padding=(0, 1)),
    ConvCase("two-output-rows", (2, 2, 8, 17), (3, 2, 7, 7), padding=(0, 3)),
    ConvCase("odd-output-rows-7x7", (2, 4, 9, 21), (4, 1, 7, 7), padding=3, groups=4),
    ConvCase("several-blocks", (1, 2, 5, 131), (2, 2, 3, 7), padding=(1, 3)),
    ConvCase("valid-groups", (2, 4, 9, 13), (6, 2, 4, 5), groups=2),
    ConvCase("asymmetric-same", (1, 3, 6, 12), (5, 3, 4, 6), padding="same"),
    ConvCase("one-kernel-row", (2, 3, 4, 11), (2, 3, 1, 7), padding=(0, 3)),
    ConvCase("wide-kernel", (1, 2, 12, 20), (2, 1, 11, 11), padding=5, groups=2),
    ConvCase("narrow-7x7-maps", (2, 6, 7, 7), (6, 1, 7, 7), padding=3, groups=6),
    ConvCase("three-columns", (1, 2, 6, 5), (3, 2, 2, 3)),
    ConvCase("one-output-row", (2, 3, 3, 12), (2, 3, 3, 4), padding=(0, 1)),
    ConvCase("one-output-pixel", (1, 2, 5, 5), (2, 2, 5, 5)),
]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("op", ["forward", "input-grad"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vector_rows_match_naive(case: ConvCase, op: str, dtype: str) -> None:
    geom = case.geometry(dtype)
    if op == "forward":
        assert vector_rows.applies(geom), "the case should run the vector rows"
    check_against_naive("numba", case, op, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_narrow_or_single_rows_are_computed_widened_and_cut(dtype: str) -> None:
    geom = ConvCase("c", (1, 2, 3, 7), (2, 2, 3, 3)).geometry(dtype)  # 1 x 5 outputs
    wide = vector_rows._widened(geom)
    assert wide.out_size == (2, max(5, lanes(geom.dtype)))
    assert wide.padding == (0, 1, 0, wide.out_size[1] - 5)
    assert vector_rows._widened(wide) is wide
    assert lanes(geom.dtype) * geom.dtype.itemsize == 32


def test_vector_rows_leave_dilation_to_others() -> None:
    assert not vector_rows.applies(ConvCase("d", (1, 2, 20, 20), (2, 2, 3, 3),
                                            dilation=2).geometry("float32"))
    assert vector_rows.applies(ConvCase("s", (1, 2, 40, 40), (2, 2, 3, 3),
                                        stride=2).geometry("float32"))


# Strided layers: the input split by column phase. Through the backend (few channels per
# group: the stem of RGB images, depthwise layers) and, with more channels, which the
# backend gives to other kernels, called directly.
STRIDED_CASES = [
    ConvCase("stem-7x7-s2", (2, 3, 30, 29), (4, 3, 7, 7), stride=2, padding=3),
    ConvCase("depthwise-5x5-s2", (2, 4, 17, 20), (4, 1, 5, 5), stride=2, padding=2, groups=4),
    ConvCase("1x1-s2", (1, 2, 9, 21), (3, 2, 1, 1), stride=2),
    ConvCase("4x5-s32", (1, 2, 19, 40), (3, 2, 4, 5), stride=(3, 2), padding=(1, 2)),
    ConvCase("3x3-s3-groups", (2, 4, 22, 31), (4, 2, 3, 3), stride=3, padding=1, groups=2),
    ConvCase("4x4-s4-valid", (1, 3, 32, 36), (5, 3, 4, 4), stride=4),
    ConvCase("narrow-s2", (1, 2, 9, 9), (2, 2, 3, 3), stride=2, padding=1),
    ConvCase("2x2-s2-dense", (1, 9, 12, 40), (5, 9, 2, 2), stride=2),
]


@pytest.mark.parametrize("case", STRIDED_CASES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_strided_vector_rows_match_naive(case: ConvCase, dtype: str) -> None:
    from convkit.testing import assert_within_bound, declared_bound, run_operation
    from convkit_backends.naive import NaiveBackend

    arrays, geom = case.arrays(dtype), case.geometry(dtype)
    actual = vector_rows.forward(arrays.x, arrays.weight, geom)
    expected = run_operation("forward", arrays, case, "naive")
    bound = declared_bound("forward", arrays, case, NaiveBackend.capabilities)
    assert_within_bound(actual, expected, bound, f"vector_rows {case}")
    if geom.weight_shape[1] <= 4:  # few channels: through the backend too
        check_against_naive("numba", case, "forward", dtype)
