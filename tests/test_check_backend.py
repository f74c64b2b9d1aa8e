"""The conformance runner (`convkit.testing.check_backend`) that `convkit check` prints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convkit
from convkit.testing import (
    CHECK_KINDS,
    CONFORMANCE_CASES,
    DTYPES,
    ConformanceCheck,
    assert_backend_conforms,
    check_backend,
    conformance_checks,
)
from convkit_backends.naive import NaiveBackend


class _Float16Backend(NaiveBackend):
    """Computes in float16 and returns float32: right shape and dtype, too imprecise."""

    def forward(self, x, weight, geom):
        low = dataclasses.replace(geom, dtype=np.dtype(np.float16))
        out = super().forward(x.astype(np.float16), weight.astype(np.float16), low)
        return out.astype(geom.dtype)


class _OffByOneWeightGrad(NaiveBackend):
    """A weight gradient that forgets the last image of the batch."""

    def backward_weight(self, x, grad_output, geom):
        if geom.batch == 1:
            return super().backward_weight(x, grad_output, geom)
        sub = geom.with_batch(geom.batch - 1)
        return super().backward_weight(x[:-1], grad_output[:-1], sub)


class _Crashing(NaiveBackend):
    def backward_input(self, grad_output, weight, geom):
        raise ZeroDivisionError("bug in the plugin")


class _NoDilationFloat64(NaiveBackend):
    capabilities = convkit.Capabilities(dtypes=frozenset({"float64"}), dilation=False)


def test_builtin_backend_passes(any_backend: str) -> None:
    report = check_backend(any_backend)
    assert report.ok, report.summary()
    capabilities = convkit.get_backend(any_backend).capabilities
    supported = sum(capabilities.unsupported_reason(c.geometry(d)) is None
                    for c in CONFORMANCE_CASES for d in DTYPES)
    expected = supported * len(CHECK_KINDS)
    skipped = len(CONFORMANCE_CASES) * len(CHECK_KINDS) * len(DTYPES) - expected
    assert sum(report.passed.values()) == expected
    assert sum(report.skipped.values()) == skipped and not report.failures
    assert report.summary().endswith(f"PASS: {expected} passed, 0 failed, {skipped} skipped")
    assert capabilities.exact or expected >= len(CONFORMANCE_CASES) * len(DTYPES) // 2


def test_float32_computed_in_float16_fails() -> None:
    convkit.register_backend("half-precision", _Float16Backend)
    report = check_backend("half-precision", dtypes=["float32"], max_failures=3)
    assert not report.ok
    assert report.failed["forward", "float32"] > 0
    assert report.passed["input-grad", "float32"] == len(CONFORMANCE_CASES)
    assert len(report.failures) == 3
    assert all(f.check.kind in ("forward", "adjoint") for f in report.failures)
    assert "outside the error bound" in report.failures[0].message


def test_wrong_gradient_is_reported_with_its_case() -> None:
    convkit.register_backend("off-by-one", _OffByOneWeightGrad)
    report = check_backend("off-by-one", dtypes=["float64"])
    batched = sum(1 for c in CONFORMANCE_CASES if c.input_shape[0] > 1)
    assert report.failed["weight-grad", "float64"] == batched
    assert report.failed["adjoint", "float64"] == batched
    assert report.passed["forward", "float64"] == len(CONFORMANCE_CASES)
    summary = report.summary()
    assert summary.splitlines()[-1].startswith("FAIL:")
    first = report.failures[0]
    assert first.check.kind == "weight-grad" and first.check.case.input_shape[0] > 1
    assert str(first.check) in summary


def test_exception_in_backend_is_a_failure_not_a_crash() -> None:
    convkit.register_backend("crashing", _Crashing)
    report = check_backend("crashing", dtypes=["float64"], max_failures=1)
    assert report.failed["input-grad", "float64"] == len(CONFORMANCE_CASES)
    assert report.failures[0].message == "ZeroDivisionError: bug in the plugin"


def test_undeclared_capabilities_are_skipped_and_counted() -> None:
    convkit.register_backend("no-dilation", _NoDilationFloat64)
    report = check_backend("no-dilation")
    dilated = sum(1 for c in CONFORMANCE_CASES if c.geometry().dilation != (1, 1))
    assert dilated > 0
    for kind in CHECK_KINDS:
        assert report.skipped[kind, "float64"] == dilated
        assert report.passed[kind, "float64"] == len(CONFORMANCE_CASES) - dilated
    assert {dtype for _, dtype in report.passed} == {"float64"}
    assert report.skip_reasons == {"dilation": dilated * len(CHECK_KINDS)}
    assert report.ok
    assert f"skipped {dilated * len(CHECK_KINDS)} (not declared: dilation)" in report.summary()


def test_a_backend_that_runs_no_check_is_not_ok() -> None:
    class Nothing(NaiveBackend):
        capabilities = convkit.Capabilities(dtypes=frozenset())

    convkit.register_backend("nothing", Nothing)
    report = check_backend("nothing")
    assert not report.passed and not report.failed
    assert not report.ok and report.summary().endswith("FAIL: 0 passed, 0 failed, 0 skipped")


def test_unknown_dtype_is_rejected() -> None:
    with pytest.raises(ValueError, match="dtypes"):
        check_backend("naive", dtypes=["float16"])


def test_assert_backend_conforms() -> None:
    assert_backend_conforms("naive", dtypes=["float64"])
    convkit.register_backend("off-by-one", _OffByOneWeightGrad)
    with pytest.raises(AssertionError, match="FAIL"):
        assert_backend_conforms("off-by-one", dtypes=["float64"])


@pytest.mark.parametrize(
    "check", conformance_checks(_NoDilationFloat64.capabilities), ids=str
)
def test_conformance_checks_parametrize_a_plugin_suite(check: ConformanceCheck) -> None:
    """What a plugin author writes: one pytest test per check its capabilities allow."""
    assert check.dtype == "float64" and check.case.geometry().dilation == (1, 1)
    check.run("im2col-take")


class _HidesNaN(NaiveBackend):
    """Right on finite data; replaces NaN by 0 in the input gradient."""

    def backward_input(self, grad_output, weight, geom):
        return np.nan_to_num(super().backward_input(grad_output, weight, geom), nan=0.0)


def test_lost_nan_fails_the_nonfinite_checks_only() -> None:
    convkit.register_backend("hides-nan", _HidesNaN)
    report = check_backend("hides-nan", dtypes=["float64"], max_failures=1)
    assert report.failed["nonfinite", "float64"] > 0
    assert sum(report.failed.values()) == report.failed["nonfinite", "float64"]
    assert "input-grad" in report.failures[0].message
    assert "positions differ in NaN/Inf" in report.failures[0].message


def _perturbed(error_factor: float) -> type[NaiveBackend]:
    """A forward pass off by 3x the direct-sum bound in the worst case, declaring
    ``error_factor``: within ``error_factor * bound`` only if the factor is at least 3."""

    class Perturbed(NaiveBackend):
        capabilities = convkit.Capabilities(error_factor=error_factor)

        def forward(self, x, weight, geom):
            y = super().forward(x, weight, geom)
            terms = geom.weight_shape[1] * geom.kernel_size[0] * geom.kernel_size[1]
            return y * (1 + 3 * terms * np.finfo(geom.dtype).eps)

    return Perturbed


def test_the_declared_error_factor_scales_the_bound() -> None:
    convkit.register_backend("perturbed-declared", _perturbed(4.0))
    assert check_backend("perturbed-declared", dtypes=["float64"]).ok
    convkit.register_backend("perturbed-undeclared", _perturbed(1.0))
    report = check_backend("perturbed-undeclared", dtypes=["float64"])
    assert report.failed["forward", "float64"] > 0


def test_progress_is_reported_after_every_check() -> None:
    seen = []
    report = check_backend("im2col-take", dtypes=["float64"],
                           on_progress=lambda done, total: seen.append((done, total)))
    total = sum(report.passed.values())
    assert seen == [(done, total) for done in range(1, total + 1)]
