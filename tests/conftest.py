"""Shared fixtures: the backends under test."""

from __future__ import annotations

import pytest

import convkit

BUILTIN_BACKENDS = ("naive", "im2col-strided", "im2col-take", "numba")


@pytest.fixture(params=BUILTIN_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each built-in backend's name."""
    return request.param


@pytest.fixture(autouse=True)
def _no_backend_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose backends explicitly; a CONVKIT_BACKEND in the shell must not leak in."""
    monkeypatch.delenv("CONVKIT_BACKEND", raising=False)
    yield
    convkit.refresh_backends()
