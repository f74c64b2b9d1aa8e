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
operation applied to the absolute values of its operands (:func:`error_bound`), times the
``error_factor`` an inexact backend declares. The cases, their data and the bound are
convkit's shared vocabulary (:mod:`convkit.workload`), re-exported here.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from convkit.backend import Capabilities
from convkit.conformance_cases import (
    CONFORMANCE_CASES,
    SWEEP_CASES,
    TORCH_SAMPLE_CASES,
    WINOGRAD_CASES,
)
from convkit.registry import get_backend
from convkit.workload import (
    DTYPES,
    OPERATIONS,
    ConvArrays,
    ConvCase,
    Operation,
    declared_bound_of,
    error_bound,
    magnitude,
    rounding_bound,
    run_operation,
    terms_per_output,
)

__all__ = [  # the vocabulary of convkit.workload, re-exported for plugin authors
    "CHECK_KINDS",
    "CONFORMANCE_CASES",
    "DTYPES",
    "NONFINITE_SCENARIOS",
    "OPERATIONS",
    "SWEEP_CASES",
    "TORCH_SAMPLE_CASES",
    "WINOGRAD_CASES",
    "CheckFailure",
    "ConformanceCheck",
    "ConformanceReport",
    "ConvArrays",
    "ConvCase",
    "Operation",
    "assert_backend_conforms",
    "assert_same_nonfinite",
    "assert_within_bound",
    "check_against_naive",
    "check_backend",
    "conformance_checks",
    "declared_bound",
    "error_bound",
    "poisoned",
    "rounding_bound",
    "run_operation",
    "terms_per_output",
    "unsupported_checks",
]

def declared_bound(
    op: Operation, arrays: ConvArrays, case: ConvCase, capabilities: Capabilities
) -> np.ndarray:
    """The elementwise error a backend with ``capabilities`` may make on ``op``.

    ``error_factor * error_bound`` plus, for a backend whose rounding spreads over all
    outputs (``error_spread > 0``, an FFT), ``error_spread * eps * max(magnitude)``. For an
    exact backend this is :func:`error_bound` itself.
    """
    dtype = arrays.x.dtype
    return declared_bound_of(magnitude(op, arrays, case),
                             terms_per_output(op, case.geometry(dtype.name)), dtype,
                             capabilities.error_factor, capabilities.error_spread)


def check_against_naive(
    backend: str, case: ConvCase, op: Operation, dtype: str = "float64"
) -> None:
    """Raise ``AssertionError`` if ``backend`` disagrees with the naive backend beyond the bound
    (as the backend declares it: :func:`declared_bound`)."""
    arrays = case.arrays(dtype)
    actual = run_operation(op, arrays, case, backend)
    expected = run_operation(op, arrays, case, "naive")
    bound = declared_bound(op, arrays, case, get_backend(backend).capabilities)
    assert_within_bound(actual, expected, bound, f"{backend} {op} {case}")


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


# --- Conformance suite: every check a backend must pass, as one runnable list ---------------

CheckKind = Literal["forward", "input-grad", "weight-grad", "adjoint", "nonfinite"]
CHECK_KINDS: tuple[CheckKind, ...] = (*OPERATIONS, "adjoint", "nonfinite")

#: NaN/Inf values put into one operand (``x``, ``weight`` or ``grad_output``) by
#: :func:`poisoned`.
NONFINITE_SCENARIOS: dict[str, tuple[str, tuple[float, ...]]] = {
    "x-nan": ("x", (np.nan, np.nan)),
    "x-inf": ("x", (np.inf, -np.inf, np.inf)),
    "weight-nan": ("weight", (np.nan,)),
    "weight-inf": ("weight", (np.inf, -np.inf)),
    "grad-nan": ("grad_output", (np.nan,)),
    "grad-inf": ("grad_output", (-np.inf, np.inf)),
}


def poisoned(arrays: ConvArrays, scenario: str, seed: int = 0) -> ConvArrays:
    """A copy of ``arrays`` with the scenario's values at random positions of one operand."""
    operand, values = NONFINITE_SCENARIOS[scenario]
    fields = {name: np.array(getattr(arrays, name)) for name in ("x", "weight", "grad_output")}
    target = fields[operand].reshape(-1)  # a view: fields[operand] is a fresh C array
    rng = np.random.default_rng([seed, *scenario.encode()])
    target[rng.choice(target.size, size=len(values), replace=False)] = values
    return ConvArrays(**fields)


def nonfinite_classes(a: np.ndarray) -> np.ndarray:
    """Each element's class: 0 finite, 1 NaN, 2 +Inf, 3 -Inf."""
    return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [1, 2, 3], 0)


def assert_same_nonfinite(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Raise ``AssertionError`` unless NaN, +Inf and -Inf sit at the same positions."""
    got, want = nonfinite_classes(actual), nonfinite_classes(expected)
    differ = [tuple(map(int, p)) for p in np.argwhere(got != want)]
    if differ:
        raise AssertionError(
            f"{what}: {len(differ)} positions differ in NaN/Inf, first {differ[0]}: class "
            f"{got[differ[0]]}, expected {want[differ[0]]} (0 finite, 1 NaN, 2 +Inf, 3 -Inf)"
        )


@dataclass(frozen=True)
class ConformanceCheck:
    """One check of the suite: ``kind`` of ``case`` in ``dtype``.

    ``kind`` is an operation (compared with the naive backend in float64, within
    :func:`error_bound`), ``'adjoint'`` (the identity ``<y, gy> = <x, gx> = <w, gw>``) or
    ``'nonfinite'`` (NaN and Inf reach the same outputs of all three operations as in the
    naive backend, with one of :data:`NONFINITE_SCENARIOS` chosen by the case's name).
    """

    case: ConvCase
    kind: CheckKind
    dtype: str

    def __str__(self) -> str:
        return f"{self.kind}-{self.dtype}-{self.case}"

    def run(self, backend: str) -> None:
        """Raise ``AssertionError`` (or the backend's own error) if ``backend`` fails it.

        The error bound is the one the backend declares (:func:`declared_bound`): its
        ``error_factor`` times the direct-sum bound, plus its ``error_spread`` term.
        """
        arrays = self.case.arrays(self.dtype)
        capabilities = get_backend(backend).capabilities
        if self.kind == "adjoint":
            _check_adjoint(backend, arrays, self.case, capabilities)
            return
        if self.kind == "nonfinite":
            scenarios = list(NONFINITE_SCENARIOS)
            scenario = scenarios[sum(self.case.name.encode()) % len(scenarios)]
            bad = poisoned(arrays, scenario)
            for op in OPERATIONS:
                assert_same_nonfinite(run_operation(op, bad, self.case, backend),
                                      _reference(op, bad, self.case),
                                      f"{backend} {op} {self} ({scenario})")
            return
        actual = run_operation(self.kind, arrays, self.case, backend)
        if actual.dtype != arrays.x.dtype:
            raise AssertionError(f"returned dtype {actual.dtype}, expected {arrays.x.dtype}")
        assert_within_bound(
            actual.astype(np.float64),
            _reference(self.kind, arrays, self.case),
            declared_bound(self.kind, arrays, self.case, capabilities),
            f"{backend} {self}",
        )


def _reference(op: Operation, arrays: ConvArrays, case: ConvCase) -> np.ndarray:
    """``op`` by the naive backend in float64 on the same data (exact to float64 rounding).

    A correct float32 result is within ``error_bound`` of the exact value, and the float64
    reference is ``2**29`` times closer to it, so one bound serves both dtypes.
    """
    return run_operation(op, arrays.astype(np.float64), case, "naive")


def _check_adjoint(
    backend: str, arrays: ConvArrays, case: ConvCase, capabilities: Capabilities | None = None
) -> None:
    """``<conv(x, w), gy> == <x, grad_x> == <w, grad_w>`` within the propagated error bounds.

    Each inner product ``<r, p>`` of a computed result ``r`` is off by at most
    ``<bound(r), |p|>`` (``bound`` as the backend declares it, :func:`declared_bound`) plus
    the rounding of the float64 dot itself.
    """
    capabilities = capabilities or Capabilities()
    partners = {"forward": arrays.grad_output, "input-grad": arrays.x,
                "weight-grad": arrays.weight}
    dots, slack = {}, {}
    for op, partner in partners.items():
        r = run_operation(op, arrays, case, backend).astype(np.float64)
        p = np.asarray(partner, np.float64)
        dots[op] = float(np.vdot(r, p))
        slack[op] = float(
            np.vdot(declared_bound(op, arrays, case, capabilities), np.abs(p))
            + r.size * np.finfo(np.float64).eps * np.vdot(np.abs(r), np.abs(p))
        )
    for op in ("input-grad", "weight-grad"):
        diff = abs(dots[op] - dots["forward"])
        allowed = slack[op] + slack["forward"]
        if not diff <= allowed:
            raise AssertionError(
                f"{backend} adjoint {case} {arrays.x.dtype}: <y, gy> = {dots['forward']!r} but "
                f"the {op} inner product = {dots[op]!r} (difference {diff:.3g} > {allowed:.3g})"
            )


def conformance_checks(
    capabilities: Capabilities | None = None, dtypes: Sequence[str] | None = None
) -> list[ConformanceCheck]:
    """Every check of the suite that a backend with ``capabilities`` must pass.

    ``dtypes`` narrows the dtypes (default: those the capabilities declare). Checks whose
    configuration the capabilities exclude are left out; see :func:`unsupported_checks`.
    """
    return [c for c in _all_checks(capabilities, dtypes) if _reason(c, capabilities) is None]


def unsupported_checks(
    capabilities: Capabilities, dtypes: Sequence[str] | None = None
) -> list[tuple[ConformanceCheck, str]]:
    """The checks ``capabilities`` exclude, each with the reason the backend would give."""
    found = ((c, _reason(c, capabilities)) for c in _all_checks(capabilities, dtypes))
    return [(c, reason) for c, reason in found if reason is not None]


def _all_checks(
    capabilities: Capabilities | None, dtypes: Sequence[str] | None
) -> list[ConformanceCheck]:
    if dtypes is None:
        declared = capabilities.dtypes if capabilities is not None else DTYPES
        dtypes = [d for d in DTYPES if d in declared]
    unknown = sorted(set(dtypes) - set(DTYPES))
    if unknown:
        raise ValueError(f"dtypes must be among {DTYPES}, got {unknown}")
    return [ConformanceCheck(case, kind, dtype)
            for dtype in dtypes for kind in CHECK_KINDS for case in CONFORMANCE_CASES]


def _reason(check: ConformanceCheck, capabilities: Capabilities | None) -> str | None:
    if capabilities is None:
        return None
    return capabilities.unsupported_reason(check.case.geometry(check.dtype))


@dataclass(frozen=True)
class CheckFailure:
    """A failed check and what went wrong (the assertion or the exception raised)."""

    check: ConformanceCheck
    message: str


@dataclass
class ConformanceReport:
    """The outcome of :func:`check_backend`. ``ok`` is true when every check ran passed."""

    backend: str
    capabilities: str
    passed: Counter[tuple[CheckKind, str]] = field(default_factory=Counter)
    failed: Counter[tuple[CheckKind, str]] = field(default_factory=Counter)
    skipped: Counter[tuple[CheckKind, str]] = field(default_factory=Counter)
    skip_reasons: Counter[str] = field(default_factory=Counter)
    failures: list[CheckFailure] = field(default_factory=list)
    """The first failures, in suite order (at most ``max_failures``)."""

    @property
    def ok(self) -> bool:
        return not self.failed and sum(self.passed.values()) > 0

    def summary(self) -> str:
        """A human-readable report: counts per operation and dtype, then the first failures."""
        lines = [f"backend {self.backend!r}: {self.capabilities}"]
        rows = sorted(set(self.passed) | set(self.failed) | set(self.skipped),
                      key=lambda k: (CHECK_KINDS.index(k[0]), k[1]))
        for key in rows:
            kind, dtype = key
            counts = f"{self.passed[key]:4d} passed"
            if self.failed[key]:
                counts += f", {self.failed[key]} FAILED"
            if self.skipped[key]:
                counts += f", {self.skipped[key]} skipped"
            lines.append(f"  {kind:<12} {dtype:<8} {counts}")
        for reason, count in sorted(self.skip_reasons.items()):
            lines.append(f"  skipped {count} (not declared: {reason})")
        if self.failures:
            lines.append(f"first {len(self.failures)} failure(s):")
            lines.extend(f"  {f.check}: {f.message}" for f in self.failures)
        total_passed, total_failed = sum(self.passed.values()), sum(self.failed.values())
        total_skipped = sum(self.skipped.values())
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(f"{verdict}: {total_passed} passed, {total_failed} failed, "
                     f"{total_skipped} skipped")
        return "\n".join(lines)


def check_backend(
    name: str,
    *,
    dtypes: Sequence[str] | None = None,
    max_failures: int = 5,
    on_progress: Callable[[int, int], None] | None = None,
) -> ConformanceReport:
    """Run the conformance suite against the installed backend ``name``.

    Every case of :data:`CONFORMANCE_CASES` x every operation x every dtype the backend
    declares (or ``dtypes``), compared with the naive backend in float64 within
    :func:`error_bound`, plus the adjoint identity. Cases the backend's capabilities exclude
    are skipped and counted. Exceptions raised by the backend count as failures.
    ``on_progress(done, total)`` is called after each check that runs. Raises
    :class:`~convkit.UnknownBackendError` / :class:`~convkit.BackendUnavailableError` if
    ``name`` cannot be loaded.
    """
    capabilities = get_backend(name).capabilities
    report = ConformanceReport(name, capabilities.describe())
    for check, reason in unsupported_checks(capabilities, dtypes):
        report.skipped[check.kind, check.dtype] += 1
        report.skip_reasons[_reason_kind(reason)] += 1
    checks = conformance_checks(capabilities, dtypes)
    for done, check in enumerate(checks, 1):
        try:
            check.run(name)
        except Exception as exc:  # a failed assertion or a crash of the backend
            report.failed[check.kind, check.dtype] += 1
            if len(report.failures) < max_failures:
                message = str(exc) if isinstance(exc, AssertionError) else (
                    f"{type(exc).__name__}: {exc}")
                report.failures.append(CheckFailure(check, message))
        else:
            report.passed[check.kind, check.dtype] += 1
        if on_progress is not None:
            on_progress(done, len(checks))
    return report


def _reason_kind(reason: str) -> str:
    """``'dilation=(2, 2) is not supported (only 1)'`` -> ``'dilation'``."""
    return re.split(r"[ =]", reason, maxsplit=1)[0]


def assert_backend_conforms(name: str, *, dtypes: Sequence[str] | None = None) -> None:
    """Raise ``AssertionError`` with the report's summary unless ``name`` passes the suite.

    One call for a plugin's own test suite; for one pytest test per check, parametrize over
    :func:`conformance_checks` instead (see ``docs/plugins.md``).
    """
    report = check_backend(name, dtypes=dtypes)
    if not report.ok:
        raise AssertionError(report.summary())
