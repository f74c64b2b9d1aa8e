"""Backend selection: precedence, context isolation, lazy imports, unknown names."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

import convkit
from convkit.registry import DEFAULT_BACKEND, resolve_backend_name


def test_builtin_backends_are_registered() -> None:
    assert {"naive", "im2col-strided", "im2col-take", "numba"} <= set(convkit.list_backends())


def test_default_backend() -> None:
    assert resolve_backend_name() == DEFAULT_BACKEND == "auto"
    assert convkit.get_backend().name == "auto"


def test_precedence_argument_over_context_over_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVKIT_BACKEND", "naive")
    assert resolve_backend_name() == "naive"
    with convkit.use_backend("im2col-take"):
        assert resolve_backend_name() == "im2col-take"
        with convkit.use_backend("numba"):
            assert resolve_backend_name() == "numba"
        assert resolve_backend_name() == "im2col-take"
        assert resolve_backend_name("im2col-strided") == "im2col-strided"
    assert resolve_backend_name() == "naive"


def test_use_backend_restores_on_exception() -> None:
    with pytest.raises(KeyError), convkit.use_backend("naive"):
        raise KeyError("boom")
    assert resolve_backend_name() == DEFAULT_BACKEND


def test_use_backend_yields_the_instance() -> None:
    with convkit.use_backend("im2col-take") as backend:
        assert backend is convkit.get_backend("im2col-take")


def test_selected_backend_actually_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice reaches the call: a spy backend sees exactly the calls routed to it."""
    calls: list[str] = []

    class Spy(type(convkit.get_backend("naive"))):  # type: ignore[misc]
        def forward(self, x, weight, geom):
            calls.append("forward")
            return super().forward(x, weight, geom)

    convkit.register_backend("spy", Spy)
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    convkit.conv2d(x, w)
    assert calls == []
    with convkit.use_backend("spy"):
        convkit.conv2d(x, w)
    monkeypatch.setenv("CONVKIT_BACKEND", "spy")
    convkit.conv2d(x, w)
    convkit.conv2d(x, w, backend="naive")
    assert calls == ["forward", "forward"]


def test_context_does_not_leak_into_other_threads() -> None:
    seen: list[str] = []
    with convkit.use_backend("naive"):
        worker = threading.Thread(target=lambda: seen.append(resolve_backend_name()))
        worker.start()
        worker.join()
        assert resolve_backend_name() == "naive"
    assert seen == [DEFAULT_BACKEND]


@pytest.mark.parametrize(
    ("select", "source"),
    [
        (lambda: convkit.conv2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), backend="numbaa"),
         "backend= argument"),
        (lambda: convkit.use_backend("numbaa").__enter__(), "use_backend()"),
    ],
)
def test_unknown_name_says_where_it_came_from(select, source: str) -> None:
    with pytest.raises(convkit.UnknownBackendError) as info:
        select()
    message = str(info.value)
    assert "'numbaa'" in message and source in message
    assert "im2col-strided" in message  # lists the valid names
    assert "did you mean 'numba'" in message


def test_unknown_name_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVKIT_BACKEND", "im2col")
    with pytest.raises(convkit.UnknownBackendError, match="CONVKIT_BACKEND"):
        convkit.conv2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)))


def test_import_and_listing_do_not_import_backends() -> None:
    """`import convkit` and list_backends() import no backend module, so not numba."""
    code = (
        "import sys, convkit; names = convkit.list_backends(); "
        "assert 'numba' in names, names; "
        "loaded = [m for m in sys.modules if m == 'numba' or m.startswith('convkit_backends')]; "
        "assert not loaded, loaded; "
        "convkit.get_backend('naive'); "
        "assert 'convkit_backends.naive' in sys.modules and 'numba' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_backend_rejects_taken_and_invalid_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        convkit.register_backend("naive", type(convkit.get_backend("naive")))
    with pytest.raises(ValueError, match="invalid backend name"):
        convkit.register_backend("Bad Name", type(convkit.get_backend("naive")))


def test_register_backend_rejects_non_backends() -> None:
    with pytest.raises(TypeError, match="ConvBackend"):
        convkit.register_backend("not-a-backend", object)
