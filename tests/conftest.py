"""Shared fixtures: the backends under test, and a hermetic ``auto``.

The default backend is ``auto``, which measures layers and writes a wisdom file. So that
no test writes to the user's cache and every test that passes no backend runs the same
backend on every machine, the whole session runs with ``CONVKIT_CACHE_DIR`` in a temporary
directory and ``CONVKIT_AUTOTUNE=off`` (the rules only); ``tests/test_auto*.py`` turn
measuring on where they test it.
"""

from __future__ import annotations

import importlib
import sys

import pytest

import convkit

#: The exact built-in backends: every configuration, results within the direct-sum bound.
BUILTIN_BACKENDS = ("naive", "im2col-strided", "im2col-take", "numba")
#: Built-in backends that declare an error bound of their own and only some configurations
#: (tested against their declaration, skipping what they refuse).
INEXACT_BACKENDS = ("fft",)


@pytest.fixture(params=BUILTIN_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each exact built-in backend's name."""
    return request.param


@pytest.fixture(autouse=True, scope="session")
def _hermetic_auto(tmp_path_factory: pytest.TempPathFactory):
    """A session-wide temporary wisdom directory and rules-only auto (see the module doc)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("CONVKIT_CACHE_DIR", str(tmp_path_factory.mktemp("convkit-cache")))
    patch.setenv("CONVKIT_AUTOTUNE", "off")
    patch.delenv("CONVKIT_AUTO_CANDIDATES", raising=False)
    yield
    patch.undo()


@pytest.fixture
def measuring_auto(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """auto as ``tests/test_auto*.py`` test it: a fresh wisdom directory (``tmp_path/cache``),
    measuring on, every layer worth measuring, warnings and decisions of earlier tests
    forgotten."""
    from convkit import autotune
    from convkit.autotune import candidates, keys, rules

    monkeypatch.setenv("CONVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVKIT_AUTOTUNE", "on")
    monkeypatch.setattr(rules, "TUNE_MIN_FLOPS", 0)
    monkeypatch.setattr(candidates, "_warned", set())
    autotune.forget()
    yield
    autotune.set_candidates(None)
    autotune.forget()
    keys.forget_environment()


@pytest.fixture(params=BUILTIN_BACKENDS + INEXACT_BACKENDS)
def any_backend(request: pytest.FixtureRequest) -> str:
    """Each built-in backend's name, the inexact ones included."""
    return request.param


def skip_unsupported(backend: str, geom: convkit.ConvGeometry) -> None:
    """Skip the test if ``backend``'s capabilities refuse ``geom``."""
    reason = convkit.get_backend(backend).capabilities.unsupported_reason(geom)
    if reason is not None:
        pytest.skip(f"{backend}: {reason}")


@pytest.fixture(autouse=True)
def _no_backend_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose backends explicitly; a CONVKIT_BACKEND in the shell must not leak in."""
    monkeypatch.delenv("CONVKIT_BACKEND", raising=False)
    yield
    convkit.refresh_backends()


@pytest.fixture
def make_distribution(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Put a throwaway installed distribution on ``sys.path``; returns a factory.

    ``make_distribution(name, entry_points={"backend-name": "module:Class"},
    modules={"module": "source"})`` writes the modules and a ``<name>-0.1.dist-info`` with
    ``entry_points.txt`` (what pip writes), so importlib.metadata finds it as installed.
    The registry is refreshed so the new entry points are read; the modules are forgotten
    (removed from ``sys.modules``) afterwards.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def make(name: str, entry_points: dict[str, str], modules: dict[str, str] | None = None):
        for module, source in (modules or {}).items():
            (tmp_path / f"{module}.py").write_text(source)
            written.append(module)
        info = tmp_path / f"{name.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        lines = [f"{key} = {value}" for key, value in entry_points.items()]
        (info / "entry_points.txt").write_text("[convkit.backends]\n" + "\n".join(lines) + "\n")
        importlib.invalidate_caches()  # the import system and importlib.metadata cache listings
        convkit.refresh_backends()
        return info

    yield make
    for module in written:
        sys.modules.pop(module, None)
