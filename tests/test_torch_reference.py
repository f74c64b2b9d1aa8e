"""The ``torch`` reference backend: same answers as naive, four-sided padding included.

It is not in the conformance fixture (comparing PyTorch with itself proves nothing), but its
own translation of convkit's geometry into PyTorch calls (asymmetric 'same' padding, crop of
the input gradient) is checked here against the naive backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import convkit
from convkit.testing import CONFORMANCE_CASES, DTYPES, OPERATIONS, ConvCase, check_against_naive

pytest.importorskip("torch")


@pytest.mark.parametrize("case", CONFORMANCE_CASES, ids=str)
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_naive(case: ConvCase, op: str, dtype: str) -> None:
    check_against_naive("torch", case, op, dtype)


def test_asymmetric_padding_cases_are_covered() -> None:
    pads = [case.geometry().padding for case in CONFORMANCE_CASES]
    assert any(top != bottom or left != right for top, bottom, left, right in pads)


def test_read_only_input_is_accepted() -> None:
    x = np.ones((1, 2, 5, 5), np.float32)
    x.flags.writeable = False
    y = convkit.conv2d(x, np.ones((3, 2, 3, 3), np.float32), backend="torch")
    np.testing.assert_array_equal(y, np.full((1, 3, 3, 3), 18, np.float32))

