"""Every backend x operation x dtype on PyTorch's sample cases and convkit's sweep.

Checked against the naive backend (float64), against PyTorch (both dtypes, when installed),
by finite differences (float64) and by the adjoint identity <conv(x), gy> = <x, gx> = <w, gw>.
Exact backends within the direct-sum bound; inexact ones (fft) within the bound they declare,
on the configurations they support.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import skip_unsupported

import convkit
from convkit.testing import (
    CONFORMANCE_CASES,
    DTYPES,
    OPERATIONS,
    ConvArrays,
    ConvCase,
    assert_within_bound,
    check_against_naive,
    declared_bound,
    run_operation,
)

cases = pytest.mark.parametrize("case", CONFORMANCE_CASES, ids=str)
operations = pytest.mark.parametrize("op", OPERATIONS)
dtypes = pytest.mark.parametrize("dtype", DTYPES)


@cases
@operations
def test_matches_naive_float64(any_backend: str, case: ConvCase, op: str) -> None:
    skip_unsupported(any_backend, case.geometry())
    check_against_naive(any_backend, case, op)


@cases
@operations
@dtypes
def test_matches_torch(any_backend: str, case: ConvCase, op: str, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    skip_unsupported(any_backend, case.geometry(dtype))
    arrays = case.arrays(dtype)
    actual = run_operation(op, arrays, case, any_backend)
    assert actual.dtype == np.dtype(dtype)
    expected = _torch_operation(torch, op, arrays, case)
    capabilities = convkit.get_backend(any_backend).capabilities
    bound = declared_bound(op, arrays, case, capabilities)
    assert_within_bound(actual, expected, bound, f"{any_backend} {op} {case}")


def _torch_operation(torch, op: str, arrays: ConvArrays, case: ConvCase) -> np.ndarray:
    """``op`` by PyTorch autograd (torch.nn.grad does not take string padding)."""
    x, w = (torch.tensor(a, requires_grad=True) for a in (arrays.x, arrays.weight))
    y = torch.nn.functional.conv2d(x, w, **case.params)
    if op == "forward":
        return y.detach().numpy()
    y.backward(torch.from_numpy(np.ascontiguousarray(arrays.grad_output)))
    return (x.grad if op == "input-grad" else w.grad).numpy()


@cases
def test_adjoint_identity(any_backend: str, case: ConvCase) -> None:
    """<conv(x, w), gy> == <x, grad_x> == <w, grad_w>: the gradients are the true adjoints."""
    skip_unsupported(any_backend, case.geometry())
    arrays = case.arrays("float64")
    y, gx, gw = (run_operation(op, arrays, case, any_backend) for op in OPERATIONS)
    through_output = np.vdot(y, arrays.grad_output)
    scale = np.vdot(np.abs(y), np.abs(arrays.grad_output)) + 1.0
    assert abs(np.vdot(arrays.x, gx) - through_output) <= 1e-12 * scale
    assert abs(np.vdot(arrays.weight, gw) - through_output) <= 1e-12 * scale


@cases
def test_gradients_match_finite_differences(any_backend: str, case: ConvCase) -> None:
    """Central differences of L(x, w) = <conv(x, w), gy> along random directions."""
    skip_unsupported(any_backend, case.geometry())
    backend = any_backend
    arrays = case.arrays("float64")
    rng = np.random.default_rng(1)
    dx = rng.standard_normal(arrays.x.shape)
    dw = rng.standard_normal(arrays.weight.shape)
    gx = run_operation("input-grad", arrays, case, backend)
    gw = run_operation("weight-grad", arrays, case, backend)

    def loss(x: np.ndarray, w: np.ndarray) -> float:
        y = run_operation("forward", ConvArrays(x, w, arrays.grad_output), case, backend)
        return float(np.vdot(y, arrays.grad_output))

    eps = 1e-6
    for direction, grad, shift in ((dx, gx, "x"), (dw, gw, "w")):
        plus = loss(arrays.x + eps * dx, arrays.weight) if shift == "x" else loss(
            arrays.x, arrays.weight + eps * dw)
        minus = loss(arrays.x - eps * dx, arrays.weight) if shift == "x" else loss(
            arrays.x, arrays.weight - eps * dw)
        numeric = (plus - minus) / (2 * eps)
        analytic = np.vdot(grad, direction)
        assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-6), shift


@pytest.mark.parametrize("op", ["input-grad"])
def test_uncovered_rows_get_zero_gradient(backend: str, op: str) -> None:
    """Rows and columns that no window covers contribute nothing, so their gradient is 0."""
    case = next(c for c in CONFORMANCE_CASES if c.name == "uncovered-last-rows")
    gx = run_operation(op, case.arrays("float64"), case, backend)
    # stride 3, kernel 3, 8 rows: windows cover rows 0-5 only.
    assert np.all(gx[:, :, 6:, :] == 0) and np.all(gx[:, :, :, 6:] == 0)
    assert np.all(gx[:, :, :6, :6] != 0)
