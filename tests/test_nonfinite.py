"""NaN and Inf propagate to the same output positions in every backend, as in PyTorch.

Each scenario puts a few NaN or ±Inf values into one operand. Whether an output is NaN, +Inf
or -Inf depends only on which products enter its sum (NaN if any product is NaN or both
infinities appear), not on the order of summation, so every correct backend must agree
exactly, including products with the zero padding (``Inf * 0`` is NaN).
"""

from __future__ import annotations

import numpy as np
import pytest

from convkit.testing import (
    CONFORMANCE_CASES,
    NONFINITE_SCENARIOS,
    OPERATIONS,
    ConvArrays,
    ConvCase,
    assert_same_nonfinite,
    poisoned,
    run_operation,
)


def _poisoned(case: ConvCase, scenario: str) -> ConvArrays:
    return poisoned(case.arrays("float64"), scenario, seed=len(case.name))


@pytest.mark.parametrize("scenario", NONFINITE_SCENARIOS)
def test_same_positions_as_naive(backend: str, scenario: str) -> None:
    nonfinite_seen = 0
    for case in CONFORMANCE_CASES:
        arrays = _poisoned(case, scenario)
        for op in OPERATIONS:
            expected = run_operation(op, arrays, case, "naive")
            actual = run_operation(op, arrays, case, backend)
            assert_same_nonfinite(actual, expected, f"{backend} {op} {case}")
            nonfinite_seen += int(not np.isfinite(expected).all())
    # The operand enters two of the three operations; a value in rows no window covers
    # reaches no output, so not every pair sees one, but most must (else this tests nothing).
    assert nonfinite_seen > len(CONFORMANCE_CASES)


@pytest.mark.parametrize("scenario", NONFINITE_SCENARIOS)
def test_naive_matches_torch(scenario: str) -> None:
    """The reference's NaN/Inf positions are PyTorch's, padding products included."""
    torch = pytest.importorskip("torch")
    for case in CONFORMANCE_CASES:
        arrays = _poisoned(case, scenario)
        x, w = (torch.tensor(a, requires_grad=True) for a in (arrays.x, arrays.weight))
        y = torch.nn.functional.conv2d(x, w, **case.params)
        y.backward(torch.tensor(arrays.grad_output))
        for op, expected in zip(OPERATIONS, (y.detach(), x.grad, w.grad), strict=True):
            actual = run_operation(op, arrays, case, "naive")
            assert_same_nonfinite(actual, expected.numpy(), f"naive vs torch {op} {case}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_all_finite_finds_any_nan_or_inf_and_lets_large_values_pass(dtype: str) -> None:
    """One pass over each array: a NaN or Inf anywhere makes it False; finite values as
    large as the dtype allows do not (a plain sum overflowed on them), in contiguous arrays
    and strided views alike."""
    from convkit_backends._nonfinite import all_finite

    big = np.full((3, 5, 7, 9), np.finfo(dtype).max / 2, dtype)
    assert all_finite(big, big[:, ::2], np.zeros(0, dtype))
    for index in [(0, 0, 0, 0), (1, 2, 3, 4), (2, 4, 6, 8)]:
        for bad in (np.nan, np.inf, -np.inf):
            poisoned_array = big.copy()
            poisoned_array[index] = bad
            assert not all_finite(poisoned_array)
            assert not all_finite(big, poisoned_array.transpose(3, 2, 1, 0))
