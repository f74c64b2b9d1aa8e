"""NaN and Inf propagate to the same output positions in every backend, as in PyTorch.

Each scenario puts a few NaN or ±Inf values into one operand. Whether an output is NaN, +Inf
or -Inf depends only on which products enter its sum (NaN if any product is NaN or both
infinities appear), not on the order of summation, so every correct backend must agree
exactly, including products with the zero padding (``Inf * 0`` is NaN).
"""

from __future__ import annotations

import numpy as np
import pytest

from convkit.testing import CONFORMANCE_CASES, OPERATIONS, ConvArrays, ConvCase, run_operation

SCENARIOS = {  # operand -> values put into it
    "x-nan": ("x", [np.nan, np.nan]),
    "x-inf": ("x", [np.inf, -np.inf, np.inf]),
    "weight-nan": ("weight", [np.nan]),
    "weight-inf": ("weight", [np.inf, -np.inf]),
    "grad-nan": ("grad_output", [np.nan]),
    "grad-inf": ("grad_output", [-np.inf, np.inf]),
}


def _poisoned(case: ConvCase, scenario: str) -> ConvArrays:
    operand, values = SCENARIOS[scenario]
    arrays = case.arrays("float64")
    fields = {name: np.array(getattr(arrays, name)) for name in ("x", "weight", "grad_output")}
    target = fields[operand]
    rng = np.random.default_rng([len(case.name), len(scenario)])
    flat = rng.choice(target.size, size=len(values), replace=False)
    target.reshape(-1)[flat] = values
    return ConvArrays(**fields)


def _classes(a: np.ndarray) -> np.ndarray:
    """0 finite, 1 NaN, 2 +Inf, 3 -Inf."""
    return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [1, 2, 3], 0)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_positions_as_naive(backend: str, scenario: str) -> None:
    nonfinite_seen = 0
    for case in CONFORMANCE_CASES:
        arrays = _poisoned(case, scenario)
        for op in OPERATIONS:
            expected = _classes(run_operation(op, arrays, case, "naive"))
            actual = _classes(run_operation(op, arrays, case, backend))
            differ = [tuple(map(int, p)) for p in np.argwhere(actual != expected)]
            assert not differ, (
                f"{backend} {op} {case}: {len(differ)} positions differ from naive, first "
                f"{differ[0]}: class {actual[differ[0]]} vs {expected[differ[0]]} "
                "(0 finite, 1 NaN, 2 +Inf, 3 -Inf)"
            )
            nonfinite_seen += int(expected.any())
    # The operand enters two of the three operations; a value in rows no window covers
    # reaches no output, so not every pair sees one, but most must (else this tests nothing).
    assert nonfinite_seen > len(CONFORMANCE_CASES)


@pytest.mark.parametrize("scenario", SCENARIOS)
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
            np.testing.assert_array_equal(
                _classes(actual), _classes(expected.numpy()), err_msg=f"{op} {case}"
            )
