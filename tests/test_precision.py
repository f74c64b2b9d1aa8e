"""The precision policy and the accuracy each backend declares."""

from __future__ import annotations

import threading

import pytest

import convkit
from convkit import Capabilities
from convkit.precision import allows, get_precision, precision, set_precision


@pytest.fixture(autouse=True)
def _no_process_wide_policy(monkeypatch):
    monkeypatch.delenv("CONVKIT_PRECISION", raising=False)
    set_precision(None)
    yield
    set_precision(None)


def test_default_is_exact_and_refuses_inexact_backends():
    assert get_precision() == "exact"
    assert allows(1.0)
    assert not allows(4.0)


def test_precedence_block_over_process_over_environment(monkeypatch):
    monkeypatch.setenv("CONVKIT_PRECISION", "fast")
    assert get_precision() == "fast"
    set_precision("exact")
    assert get_precision() == "exact"
    with precision("fast"):
        assert get_precision() == "fast"
        assert allows(4.0)
    assert get_precision() == "exact"


def test_blank_environment_means_unset(monkeypatch):
    monkeypatch.setenv("CONVKIT_PRECISION", "  ")
    assert get_precision() == "exact"


def test_a_block_does_not_leak_into_other_threads():
    seen = []
    with precision("fast"):
        worker = threading.Thread(target=lambda: seen.append(get_precision()))
        worker.start()
        worker.join()
    assert seen == ["exact"]


@pytest.mark.parametrize(
    ("call", "source"),
    [
        (lambda: set_precision("fastest"), "set_precision()"),
        (lambda: precision("high").__enter__(), "precision()"),
    ],
)
def test_unknown_policy_names_the_rule(call, source):
    with pytest.raises(ValueError, match=rf"{source}.*\('exact', 'fast'\)"):
        call()


def test_unknown_policy_in_the_environment(monkeypatch):
    monkeypatch.setenv("CONVKIT_PRECISION", "medium")
    with pytest.raises(ValueError, match="CONVKIT_PRECISION"):
        get_precision()


def test_error_factor_below_one_is_refused():
    with pytest.raises(ValueError, match="error_factor must be at least 1"):
        Capabilities(error_factor=0.5)


def test_inexact_capabilities_say_so():
    assert Capabilities().exact
    inexact = Capabilities(error_factor=8)
    assert not inexact.exact
    assert inexact.describe().endswith("inexact (error x8)")


@pytest.mark.parametrize("name", ["naive", "im2col-strided", "im2col-take", "numba"])
def test_built_in_backends_declare_exact(name):
    assert convkit.get_backend(name).capabilities.error_factor == 1.0


@pytest.mark.parametrize("name", ["winograd", "fft"])
def test_inexact_built_in_backends_declare_it(name):
    capabilities = convkit.get_backend(name).capabilities
    assert not capabilities.exact
    assert not allows(capabilities.error_factor, capabilities.error_spread)


def test_a_spread_term_makes_a_backend_inexact():
    spread = Capabilities(error_factor=1.0, error_spread=4.0)
    assert not spread.exact and spread.describe().endswith("inexact (error x1, spread 4)")
    assert not allows(1.0, 4.0)
    with precision("fast"):
        assert allows(1.0, 4.0)
    with pytest.raises(ValueError, match="error_spread must be at least 0"):
        Capabilities(error_spread=-1.0)


