"""conv_transpose2d and its gradients on every backend: PyTorch's own sample cases and a sweep,
against PyTorch (both dtypes), by finite differences and by the adjoint identity, and bad input.

Tolerances come from :func:`convkit.testing.rounding_bound`: each operation of a transposed
convolution is an operation of the convolution it transposes (``TransposedGeometry.conv``),
so it sums as many terms as that one (:func:`convkit.testing.terms_per_output`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import convkit
from convkit.backend import ConvBackend
from convkit.testing import (
    DTYPES,
    OPERATIONS,
    ConvArrays,
    assert_within_bound,
    rounding_bound,
    terms_per_output,
)
from convkit.transposed import TransposedGeometry, transposed_geometry

#: The conv2d operation each operation of a transposed convolution runs.
CONV_OPERATION = {"forward": "input-grad", "input-grad": "forward", "weight-grad": "weight-grad"}


@dataclass(frozen=True)
class Case:
    """x: ``(N, Cin, H, W)``; weight: ``(Cin, Cout / groups, kh, kw)``."""

    name: str
    input_shape: tuple[int, int, int, int]
    weight_shape: tuple[int, int, int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    output_padding: int | tuple[int, int] = 0
    groups: int = 1
    dilation: int | tuple[int, int] = 1
    noncontiguous: bool = False

    def __str__(self) -> str:
        return self.name

    @property
    def params(self) -> dict:
        return {"stride": self.stride, "padding": self.padding,
                "output_padding": self.output_padding, "groups": self.groups,
                "dilation": self.dilation}

    def geometry(self) -> TransposedGeometry:
        return transposed_geometry(self.input_shape, self.weight_shape, **self.params)

    def arrays(self, dtype: str) -> ConvArrays:
        rng = np.random.default_rng(list(self.name.encode()))
        shapes = (self.input_shape, self.weight_shape, self.geometry().output_shape)
        x, w, gy = (rng.standard_normal(s).astype(dtype) for s in shapes)
        if self.noncontiguous:
            x = np.repeat(x, 2, axis=3)[..., ::2]
            gy = np.asfortranarray(gy)
        return ConvArrays(x, w, gy)


#: PyTorch's ``sample_inputs_conv_transpose2d`` cases (their batched forms).
TORCH_CASES = (
    Case("pt-stride2-pad2-op1", (1, 3, 4, 4), (3, 3, 3, 3), stride=(2, 2), padding=2,
         output_padding=(1, 1)),
    Case("pt-groups2-dil4-op-beyond-pad", (2, 2, 4, 4), (2, 2, 4, 5), stride=(3, 2),
         padding=(1, 2), output_padding=(2, 3), groups=2, dilation=(4, 4)),
    Case("pt-dil23", (1, 1, 4, 5), (1, 1, 4, 3), stride=2, padding=1, output_padding=1,
         dilation=(2, 3)),
    Case("pt-rect-kernel", (1, 1, 4, 3), (1, 2, 3, 4), stride=2, padding=1, output_padding=1),
    Case("pt-depthwise", (2, 4, 4, 4), (4, 1, 3, 3), groups=4),
    Case("pt-defaults", (1, 2, 5, 5), (2, 4, 3, 3)),
)

SWEEP_CASES = (
    Case("batch1-1x1", (1, 3, 4, 5), (3, 2, 1, 1)),
    Case("1x1-stride2-op1", (2, 3, 4, 4), (3, 4, 1, 1), stride=2, output_padding=1),
    Case("upsample-4x4-s2-p1", (2, 4, 5, 6), (4, 3, 4, 4), stride=2, padding=1),
    Case("stride3-op2-pad1", (2, 2, 3, 4), (2, 3, 3, 3), stride=3, padding=1, output_padding=2),
    Case("op-from-dilation", (1, 2, 5, 4), (2, 2, 3, 2), dilation=3, output_padding=(2, 1)),
    Case("rect-stride-dilation", (2, 3, 4, 6), (3, 2, 2, 5), stride=(1, 3), padding=(2, 1),
         output_padding=(0, 2), dilation=(3, 1)),
    Case("groups3", (2, 6, 4, 4), (6, 2, 3, 3), stride=2, padding=1, output_padding=1,
         groups=3),
    Case("depthwise-x2", (2, 3, 5, 5), (3, 2, 3, 3), stride=2, groups=3),
    Case("padding-eats-output", (1, 2, 4, 4), (2, 2, 3, 3), padding=2),
    Case("no-input-reaches-output", (2, 2, 1, 1), (2, 2, 1, 1), stride=3, padding=1,
         output_padding=2),
    Case("noncontiguous", (2, 2, 5, 4), (2, 3, 3, 2), stride=2, padding=(1, 0),
         output_padding=1, noncontiguous=True),
)

CASES = TORCH_CASES + SWEEP_CASES
cases = pytest.mark.parametrize("case", CASES, ids=str)


def run(op: str, a: ConvArrays, case: Case, backend: str | None = None) -> np.ndarray:
    """``op`` of the transposed convolution ``case`` on ``a``."""
    if op == "forward":
        return convkit.conv_transpose2d(a.x, a.weight, backend=backend, **case.params)
    if op == "input-grad":
        return convkit.conv_transpose2d_input_grad(a.x.shape, a.weight, a.grad_output,
                                                   backend=backend, **case.params)
    return convkit.conv_transpose2d_weight_grad(a.x, a.weight.shape, a.grad_output,
                                                backend=backend, **case.params)


def bound(op: str, a: ConvArrays, case: Case, backend: str) -> np.ndarray:
    """How far two correct results of ``op`` may differ, times ``backend``'s error factor."""
    absolute = ConvArrays(*(np.abs(v).astype(np.float64) for v in
                            (a.x, a.weight, a.grad_output)))
    terms = terms_per_output(CONV_OPERATION[op], case.geometry().conv)
    factor = convkit.get_backend(backend).capabilities.error_factor
    return factor * rounding_bound(run(op, absolute, case, "naive"), terms, a.x.dtype)


def torch_results(torch, a: ConvArrays, case: Case) -> dict[str, np.ndarray]:
    """The three operations by PyTorch autograd."""
    x, w = (torch.tensor(np.array(v), requires_grad=True) for v in (a.x, a.weight))
    y = torch.nn.functional.conv_transpose2d(x, w, **case.params)
    y.backward(torch.tensor(np.array(a.grad_output)))
    return {"forward": y.detach().numpy(), "input-grad": x.grad.numpy(),
            "weight-grad": w.grad.numpy()}


@cases
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch(backend: str, case: Case, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    a = case.arrays(dtype)
    expected = torch_results(torch, a, case)
    for op in OPERATIONS:
        actual = run(op, a, case, backend)
        assert_within_bound(actual, expected[op], bound(op, a, case, backend),
                            f"{backend} {op} {case} {dtype}")


def test_output_size_formula() -> None:
    for case in CASES:
        (_, _, h, w), (_, _, kh, kw) = case.input_shape, case.weight_shape
        (sh, sw), (ph, pw), (oh, ow), (dh, dw) = (
            np.broadcast_to(case.params[k], 2)
            for k in ("stride", "padding", "output_padding", "dilation"))
        assert case.geometry().output_shape[2:] == (
            (h - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1,
            (w - 1) * sw - 2 * pw + dw * (kw - 1) + ow + 1), case


def test_rows_no_input_reaches_are_zero(backend: str) -> None:
    """output_padding beyond padding adds rows/columns no input pixel reaches."""
    case = next(c for c in CASES if c.name == "pt-groups2-dil4-op-beyond-pad")
    y = run("forward", case.arrays("float64"), case, backend)
    assert case.geometry().conv.in_size == (y.shape[2] - 1, y.shape[3] - 1)
    assert np.all(y[:, :, -1, :] == 0) and np.all(y[:, :, :, -1] == 0)
    assert np.any(y[:, :, -2, :] != 0) and np.any(y[:, :, :, -2] != 0)


def _dot_slack(result: np.ndarray, result_bound: np.ndarray, partner: np.ndarray) -> float:
    """How far ``<result, partner>`` may be off: the result's bound, then the float64 dot."""
    p = np.abs(partner).astype(np.float64)
    return float(np.vdot(result_bound, p)
                 + result.size * np.finfo(np.float64).eps * np.vdot(np.abs(result), p))


@cases
def test_adjoint_identity(backend: str, case: Case) -> None:
    """<conv_transpose2d(x, w), gy> == <x, grad_x> == <w, grad_w> in float64."""
    a = case.arrays("float64")
    partners = {"forward": a.grad_output, "input-grad": a.x, "weight-grad": a.weight}
    dots, slack = {}, {}
    for op, partner in partners.items():
        r = run(op, a, case, backend)
        dots[op] = float(np.vdot(r, partner))
        slack[op] = _dot_slack(r, bound(op, a, case, backend), partner)
    for op in ("input-grad", "weight-grad"):
        assert abs(dots[op] - dots["forward"]) <= slack[op] + slack["forward"], op


@cases
def test_gradients_match_finite_differences(backend: str, case: Case) -> None:
    """Central differences of L = <conv_transpose2d(x, w), gy> along random directions, float64.

    L is linear in x and in w, so a step of 1 has no truncation error: only rounding, bounded
    like the results it is computed from.
    """
    a = case.arrays("float64")
    rng = np.random.default_rng(1)
    for op, name in (("input-grad", "x"), ("weight-grad", "weight")):
        direction = rng.standard_normal(getattr(a, name).shape)
        numeric, slack = 0.0, 0.0
        for sign in (1, -1):
            shifted = ConvArrays(**{"x": a.x, "weight": a.weight, "grad_output": a.grad_output,
                                    name: getattr(a, name) + sign * direction})
            y = run("forward", shifted, case, backend)
            numeric += sign * float(np.vdot(y, a.grad_output)) / 2
            slack += _dot_slack(y, bound("forward", shifted, case, backend), a.grad_output) / 2
        grad = run(op, a, case, backend)
        analytic = float(np.vdot(grad, direction))
        slack += _dot_slack(grad, bound(op, a, case, backend), direction)
        assert abs(numeric - analytic) <= slack, (name, numeric, analytic, slack)


def test_bias_is_added_per_output_channel(backend: str) -> None:
    case = TORCH_CASES[1]
    a = case.arrays("float32")
    b = np.arange(4, dtype=np.float32)
    y = convkit.conv_transpose2d(a.x, a.weight, b, backend=backend, **case.params)
    expected = convkit.conv_transpose2d(a.x, a.weight, backend=backend, **case.params)
    np.testing.assert_array_equal(y, expected + b[:, None, None])


def test_inputs_are_not_modified(backend: str) -> None:
    case = next(c for c in CASES if c.noncontiguous)
    a = case.arrays("float32")
    b = np.ones(3, np.float32)
    before = [np.array(v) for v in (a.x, a.weight, a.grad_output, b)]
    convkit.conv_transpose2d(a.x, a.weight, b, backend=backend, **case.params)
    for op in ("input-grad", "weight-grad"):
        run(op, a, case, backend)
    for old, new in zip(before, (a.x, a.weight, a.grad_output, b), strict=True):
        np.testing.assert_array_equal(old, new)


def test_dtype_and_empty_batch() -> None:
    case = TORCH_CASES[0]
    for dtype in DTYPES:
        a = case.arrays(dtype)
        assert {run(op, a, case).dtype for op in OPERATIONS} == {np.dtype(dtype)}
    empty = np.zeros((0, 3, 4, 4), np.float32)
    y = convkit.conv_transpose2d(empty, case.arrays("float32").weight, **case.params)
    assert y.shape == (0, 3, 6, 6)


X = np.zeros((2, 4, 5, 5), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"stride": 0}, ValueError, r"stride must be at least 1"),
        ({"padding": -1}, ValueError, r"padding must be non-negative"),
        ({"padding": "same"}, ValueError, r"padding must be an int .* 'same' or 'valid'"),
        ({"padding": "valid"}, ValueError, r"padding must be an int"),
        ({"dilation": (1, 0)}, ValueError, r"dilation must be at least 1"),
        ({"output_padding": -1}, ValueError, r"output_padding must be non-negative"),
        ({"output_padding": 1}, ValueError,
         r"output_padding must be smaller than either stride or dilation"),
        ({"output_padding": (0, 2), "stride": 2}, ValueError,
         r"output_padding must be smaller than either stride or dilation"),
        ({"output_padding": 2, "stride": 2, "dilation": 2}, ValueError, r"output_padding"),
        ({"output_padding": 1.0, "stride": 2}, TypeError, r"output_padding must be an int"),
        ({"groups": 3}, ValueError, r"groups=3 must divide the input channels \(4\)"),
        ({"groups": 0}, ValueError, r"groups must be a positive int"),
        ({"padding": 4}, ValueError, r"padding=4 is too large: the output would be -1x-1"),
        ({"x": X[0]}, ValueError, r"x must be 4-D \(N, Cin, H, W\)"),
        ({"x": X.astype(np.float64)}, TypeError, r"weight has dtype float32 but x has float64"),
        ({"x": X.astype(np.int64)}, TypeError, r"x must have dtype float32 or float64"),
        ({"weight": W[:3]}, ValueError, r"weight must have shape \(Cin, Cout / groups, kh, kw\) "
                                        r"with Cin = 4"),
        ({"weight": W[..., :0]}, ValueError, r"weight kernel size must be at least 1x1"),
        ({"bias": np.zeros(4, np.float32)}, ValueError, r"bias must have shape \(3,\)"),
        ({"bias": np.zeros(3, np.float64)}, TypeError, r"bias has dtype float64"),
    ],
    ids=lambda v: str(v)[:40] if not isinstance(v, type) else v.__name__,
)
def test_bad_input(kwargs: dict, error: type, message: str) -> None:
    args = {"x": X, "weight": W, **kwargs}
    with pytest.raises(error, match=message):
        convkit.conv_transpose2d(**args)


def test_gradient_calls_check_grad_output_shape() -> None:
    gy = np.zeros((2, 3, 7, 7), np.float32)  # the output is 7x7: this one passes
    convkit.conv_transpose2d_input_grad(X.shape, W, gy)
    with pytest.raises(ValueError, match=r"grad_output must have the transposed convolution's "
                                         r"output shape \(2, 3, 7, 7\)"):
        convkit.conv_transpose2d_input_grad(X.shape, W, gy[..., :6])
    with pytest.raises(ValueError, match="weight_shape must be 4-D"):
        convkit.conv_transpose2d_weight_grad(X, W.shape[:3], gy)
    with pytest.raises(TypeError, match="grad_output has dtype float64 but input has float32"):
        convkit.conv_transpose2d_weight_grad(X, W.shape, gy.astype(np.float64))


def test_every_backend_computes_it_through_backward_input() -> None:
    """No backend method was added: the interface is still the three conv2d operations."""
    assert sorted(ConvBackend.__abstractmethods__) == [
        "backward_input", "backward_weight", "forward"]


@pytest.mark.parametrize("case", [TORCH_CASES[1], SWEEP_CASES[2]], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_matches_torch_autograd(backend: str, case: Case, dtype: str) -> None:
    """ConvTranspose2d's forward and gradients against torch.nn.ConvTranspose2d's autograd."""
    torch = pytest.importorskip("torch")
    (n, cin, _, _), (_, coutg, kh, kw) = case.input_shape, case.weight_shape
    layer = convkit.ConvTranspose2d(cin, coutg * case.groups, (kh, kw), **case.params,
                                    backend=backend, dtype=dtype, rng=0)
    reference = torch.nn.ConvTranspose2d(cin, coutg * case.groups, (kh, kw), **case.params,
                                         dtype=getattr(torch, dtype))
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(layer.weight))
        reference.bias.copy_(torch.from_numpy(layer.bias))
    a = case.arrays(dtype)
    a = ConvArrays(a.x, layer.weight, a.grad_output)
    x = torch.tensor(a.x, requires_grad=True)
    y = reference(x)
    y.backward(torch.from_numpy(a.grad_output))

    eps = np.finfo(dtype).eps
    expected_y = y.detach().numpy()  # the bias adds one rounding to each result
    assert_within_bound(layer(a.x), expected_y, bound("forward", a, case, backend)
                        + 2 * eps * np.abs(expected_y), f"forward {case}")
    assert_within_bound(layer.backward(a.grad_output), x.grad.numpy(),
                        bound("input-grad", a, case, backend), f"input-grad {case}")
    assert_within_bound(layer.weight_grad, reference.weight.grad.numpy(),
                        bound("weight-grad", a, case, backend), f"weight-grad {case}")
    terms = n * a.grad_output.shape[2] * a.grad_output.shape[3]
    assert_within_bound(layer.bias_grad, reference.bias.grad.numpy(),
                        rounding_bound(np.abs(a.grad_output).sum((0, 2, 3)), terms, eps.dtype),
                        f"bias-grad {case}")
