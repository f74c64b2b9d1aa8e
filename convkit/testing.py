"""Conformance cases and checks that any backend must pass; convkit's own tests use them.

A plugin author can run them in their own test suite::

    import pytest
    from convkit.testing import CONFORMANCE_CASES, OPERATIONS, check_against_naive

    @pytest.mark.parametrize("case", CONFORMANCE_CASES, ids=str)
    @pytest.mark.parametrize("op", OPERATIONS)
    def test_my_backend(case, op):
        check_against_naive("my-backend", case, op)

Errors are judged against a bound, not an arbitrary tolerance: a sum of ``n`` terms computed
in floating point is off by at most about ``n * eps * sum(|terms|)``, so two correct
implementations differ by at most ``n * eps * magnitude``, where ``magnitude`` is the same
operation applied to the absolute values of its operands (:func:`error_bound`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from convkit.functional import conv2d, conv2d_input_grad, conv2d_weight_grad
from convkit.geometry import ConvGeometry, Padding, make_geometry

Operation = Literal["forward", "input-grad", "weight-grad"]
OPERATIONS: tuple[Operation, ...] = ("forward", "input-grad", "weight-grad")
DTYPES: tuple[str, ...] = ("float32", "float64")


@dataclass(frozen=True)
class ConvCase:
    """One convolution to test: shapes and parameters, no data.

    input_shape: ``(N, C, H, W)``; weight_shape: ``(Cout, C / groups, kh, kw)``.
    ``noncontiguous`` makes the arrays strided views instead of fresh C-ordered arrays.
    """

    name: str
    input_shape: tuple[int, int, int, int]
    weight_shape: tuple[int, int, int, int]
    stride: int | tuple[int, int] = 1
    padding: Padding = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    noncontiguous: bool = False
    source: str = field(default="convkit", compare=False)

    def __str__(self) -> str:
        return self.name

    @property
    def params(self) -> dict:
        """Keyword arguments for conv2d and its gradients."""
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups}

    def geometry(self, dtype: str = "float64") -> ConvGeometry:
        return make_geometry(self.input_shape, self.weight_shape, dtype=np.dtype(dtype),
                             **self.params)

    def arrays(self, dtype: str = "float64", seed: int = 0) -> ConvArrays:
        """Random ``x``, ``weight`` and ``grad_output`` for this case (deterministic per name)."""
        rng = np.random.default_rng([seed, *self.name.encode()])
        out_shape = self.geometry(dtype).output_shape
        make = _strided_normal if self.noncontiguous else _normal
        return ConvArrays(
            make(rng, self.input_shape, dtype),
            make(rng, self.weight_shape, dtype),
            make(rng, out_shape, dtype),
        )


@dataclass(frozen=True)
class ConvArrays:
    """The data of one case.

    x: ``(N, C, H, W)``; weight: ``(Cout, C/groups, kh, kw)``; grad_output: ``(N, Cout, Ho, Wo)``.
    """

    x: np.ndarray
    weight: np.ndarray
    grad_output: np.ndarray


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _strided_normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A non-contiguous view: every other element of the last axis, axes 0/1 swapped."""
    n, c, *rest = shape
    big = rng.standard_normal((c, n, *rest[:-1], 2 * rest[-1])).astype(dtype)
    view = big[..., ::2].swapaxes(0, 1)
    assert not view.flags.c_contiguous
    return view


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


def run_operation(
    op: Operation, arrays: ConvArrays, case: ConvCase, backend: str | None = None
) -> np.ndarray:
    """Compute ``op`` ('forward', 'input-grad' or 'weight-grad') of ``case`` with ``backend``."""
    if op == "forward":
        return conv2d(arrays.x, arrays.weight, backend=backend, **case.params)
    if op == "input-grad":
        return conv2d_input_grad(
            arrays.x.shape, arrays.weight, arrays.grad_output, backend=backend, **case.params
        )
    if op == "weight-grad":
        return conv2d_weight_grad(
            arrays.x, arrays.weight.shape, arrays.grad_output, backend=backend, **case.params
        )
    raise ValueError(f"op must be one of {OPERATIONS}, got {op!r}")


def terms_per_output(op: Operation, geom: ConvGeometry) -> int:
    """How many products are summed into one element of ``op``'s result (an upper bound)."""
    kh, kw = geom.kernel_size
    if op == "forward":
        return geom.weight_shape[1] * kh * kw
    if op == "input-grad":
        return geom.out_channels // geom.groups * kh * kw
    return geom.batch * geom.out_size[0] * geom.out_size[1]


def error_bound(op: Operation, arrays: ConvArrays, case: ConvCase) -> np.ndarray:
    """Elementwise bound on the difference between two correct results of ``op``.

    ``n * eps * magnitude``: ``magnitude`` is ``op`` on ``|operands|`` in float64 (the sum of
    absolute values of the terms), ``n`` the number of terms, ``eps`` the dtype's epsilon.
    """
    dtype = arrays.x.dtype
    absolute = ConvArrays(
        *(np.abs(a).astype(np.float64) for a in (arrays.x, arrays.weight, arrays.grad_output))
    )
    magnitude = run_operation(op, absolute, case, backend="naive")
    n = terms_per_output(op, case.geometry(dtype.name))
    return n * np.finfo(dtype).eps * magnitude + np.finfo(dtype).tiny


def check_against_naive(
    backend: str, case: ConvCase, op: Operation, dtype: str = "float64"
) -> None:
    """Raise ``AssertionError`` if ``backend`` disagrees with the naive backend beyond the bound."""
    arrays = case.arrays(dtype)
    actual = run_operation(op, arrays, case, backend)
    expected = run_operation(op, arrays, case, "naive")
    assert_within_bound(actual, expected, error_bound(op, arrays, case), f"{backend} {op} {case}")


def assert_within_bound(
    actual: np.ndarray, expected: np.ndarray, bound: np.ndarray, what: str
) -> None:
    """Raise ``AssertionError`` unless shapes and dtypes match and |actual - expected| <= bound."""
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        raise AssertionError(
            f"{what}: got shape {actual.shape} {actual.dtype}, "
            f"expected {expected.shape} {expected.dtype}"
        )
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bad = ~(err <= bound)  # also catches NaN
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, err / bound, 0)), err.shape)
        raise AssertionError(
            f"{what}: {bad.sum()} of {err.size} elements outside the error bound; worst at "
            f"{tuple(map(int, worst))}: got {actual[worst]!r}, expected {expected[worst]!r}, "
            f"bound {bound[worst]:.3g}"
        )
