"""Plugins discovered from installed distributions, and every way one can be broken.

Each test installs throwaway distributions (a ``*.dist-info`` with ``entry_points.txt`` on
``sys.path``, as pip would leave them) and checks that convkit finds, uses or rejects them
while the built-in backends keep working.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import convkit
from convkit.registry import (
    DEFAULT_BACKEND,
    backend_infos,
    backend_problem,
    resolve_backend_name,
)

GOOD_MODULE = """
from convkit_backends.naive import NaiveBackend

class TmpBackend(NaiveBackend):
    pass

class Other(NaiveBackend):
    pass

not_a_backend = 42
"""


def _still_works(name: str = "naive") -> None:
    x, w = np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3))
    np.testing.assert_array_equal(convkit.conv2d(x, w, backend=name), np.full((1, 3, 2, 2), 18.0))


def test_plugin_is_discovered_listed_lazily_and_used(make_distribution) -> None:
    make_distribution("tmp-plugin", {"tmp-good": "tmp_good_mod:TmpBackend"},
                      {"tmp_good_mod": GOOD_MODULE})
    assert "tmp-good" in convkit.list_backends()
    info = next(i for i in backend_infos() if i.name == "tmp-good")
    assert (info.distribution, info.target, info.problem) == (
        "tmp-plugin", "tmp_good_mod:TmpBackend", None)
    assert "tmp_good_mod" not in sys.modules  # listing imports nothing
    backend = convkit.get_backend("tmp-good")
    assert type(backend).__name__ == "TmpBackend" and backend.name == "tmp-good"
    assert convkit.get_backend("tmp-good") is backend  # memoised
    _still_works("tmp-good")


def test_plugin_that_fails_to_import(make_distribution) -> None:
    make_distribution("tmp-broken", {"tmp-broken": "tmp_broken_mod:Backend"},
                      {"tmp_broken_mod": "raise ImportError('needs libfoo.so')\n"})
    make_distribution("tmp-plugin", {"tmp-good": "tmp_good_mod:TmpBackend"},
                      {"tmp_good_mod": GOOD_MODULE})
    assert {"tmp-broken", "tmp-good", "naive"} <= set(convkit.list_backends())
    for _ in range(2):  # the failure is remembered, and reported the same way each time
        with pytest.raises(convkit.BackendUnavailableError) as err:
            convkit.get_backend("tmp-broken")
        assert isinstance(err.value.__cause__, ImportError)
        message = str(err.value)
        assert "'tmp-broken'" in message and "tmp-broken" in message.split("distribution")[1]
        assert "ImportError: needs libfoo.so" in message
    info = next(i for i in backend_infos() if i.name == "tmp-broken")
    assert isinstance(info.load_error, ImportError)
    with pytest.raises(convkit.BackendUnavailableError), convkit.use_backend("tmp-broken"):
        pass
    _still_works("naive")
    _still_works("tmp-good")


def test_entry_point_that_is_not_a_backend(make_distribution) -> None:
    make_distribution("tmp-plugin", {"tmp-int": "tmp_good_mod:not_a_backend"},
                      {"tmp_good_mod": GOOD_MODULE})
    with pytest.raises(convkit.BackendUnavailableError, match="ConvBackend subclass") as err:
        convkit.get_backend("tmp-int")
    assert isinstance(err.value.__cause__, TypeError)
    _still_works()


def test_identical_duplicates_are_one_backend(make_distribution) -> None:
    modules = {"tmp_good_mod": GOOD_MODULE}
    make_distribution("tmp-one", {"tmp-dup": "tmp_good_mod:TmpBackend"}, modules)
    make_distribution("tmp-two", {"tmp-dup": "tmp_good_mod:TmpBackend"})
    assert convkit.list_backends().count("tmp-dup") == 1
    assert next(i for i in backend_infos() if i.name == "tmp-dup").problem is None
    _still_works("tmp-dup")


def test_conflicting_duplicates_are_refused(make_distribution) -> None:
    modules = {"tmp_good_mod": GOOD_MODULE}
    make_distribution("tmp-one", {"tmp-dup": "tmp_good_mod:TmpBackend"}, modules)
    make_distribution("tmp-two", {"tmp-dup": "tmp_good_mod:Other"})
    info = next(i for i in backend_infos() if i.name == "tmp-dup")
    assert "more than once" in info.problem
    with pytest.raises(convkit.BackendUnavailableError) as err:
        convkit.get_backend("tmp-dup")
    message = str(err.value)
    for part in ("'tmp-dup'", "tmp_good_mod:TmpBackend from tmp-one",
                 "tmp_good_mod:Other from tmp-two"):
        assert part in message
    assert "tmp_good_mod" not in sys.modules  # refused without importing either
    _still_works()


@pytest.mark.parametrize("bad_name", ["Upper", "-dash-first", "with space", "a/b"])
def test_invalid_names_are_refused(make_distribution, bad_name: str) -> None:
    make_distribution("tmp-plugin", {bad_name: "tmp_good_mod:TmpBackend",
                                     "tmp-good": "tmp_good_mod:TmpBackend"},
                      {"tmp_good_mod": GOOD_MODULE})
    info = next(i for i in backend_infos() if i.name == bad_name)
    assert "invalid backend name" in info.problem
    with pytest.raises(convkit.BackendUnavailableError, match="invalid backend name"):
        convkit.get_backend(bad_name)
    _still_works("tmp-good")


def test_register_backend_rejects_bad_and_taken_names() -> None:
    from convkit_backends.naive import NaiveBackend

    with pytest.raises(ValueError, match="invalid backend name 'Bad Name'"):
        convkit.register_backend("Bad Name", NaiveBackend)
    with pytest.raises(ValueError, match="'naive' is already registered"):
        convkit.register_backend("naive", NaiveBackend)
    with pytest.raises(TypeError, match="ConvBackend"):
        convkit.register_backend("not-a-backend", object)
    assert "not-a-backend" not in convkit.list_backends()


@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_empty_or_blank_environment_variable_means_the_default(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CONVKIT_BACKEND", value)
    assert resolve_backend_name() == DEFAULT_BACKEND
    assert convkit.get_backend().name == DEFAULT_BACKEND


def test_environment_variable_selects_and_is_read_at_each_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVKIT_BACKEND", "naive")
    assert convkit.get_backend().name == "naive"
    monkeypatch.setenv("CONVKIT_BACKEND", "im2col-take")
    assert convkit.get_backend().name == "im2col-take"
    assert convkit.get_backend("numba").name == "numba"  # the argument wins
    with convkit.use_backend("naive"):  # so does use_backend()
        assert convkit.get_backend().name == "naive"


@pytest.mark.parametrize("value, closest", [("nave", "naive"), ("im2col", "im2col-take"),
                                            ("NUMBA", "numba")])
def test_unknown_environment_variable_names_it_and_suggests(
    monkeypatch: pytest.MonkeyPatch, value: str, closest: str
) -> None:
    monkeypatch.setenv("CONVKIT_BACKEND", value)
    with pytest.raises(convkit.UnknownBackendError) as err:
        convkit.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))
    message = str(err.value)
    assert "CONVKIT_BACKEND" in message and repr(value) in message
    assert f"did you mean {closest!r}" in message
    assert "naive, numba" in message  # the valid names are listed


def test_environment_variable_naming_a_broken_plugin(
    make_distribution, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution("tmp-broken", {"tmp-broken": "tmp_broken_mod:Backend"},
                      {"tmp_broken_mod": "raise ImportError('needs libfoo.so')\n"})
    monkeypatch.setenv("CONVKIT_BACKEND", "tmp-broken")
    with pytest.raises(convkit.BackendUnavailableError, match="tmp-broken"):
        convkit.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))
    _still_works("naive")  # an explicit choice still works; nothing falls back silently


def test_backend_unregistered_while_selected() -> None:
    from convkit_backends.naive import NaiveBackend

    convkit.register_backend("tmp-runtime", NaiveBackend)
    with convkit.use_backend("tmp-runtime"):
        convkit.unregister_backend("tmp-runtime")
        with pytest.raises(convkit.UnknownBackendError, match="tmp-runtime"):
            convkit.get_backend()


def test_backend_problem_gives_the_reason_for_a_listing(make_distribution) -> None:
    make_distribution("tmp-broken", {"tmp-broken": "tmp_broken_mod:Backend",
                                     "Bad": "tmp_broken_mod:Backend"},
                      {"tmp_broken_mod": "raise ImportError('needs libfoo.so')\n"})
    reasons = {name: backend_problem(name) for name in convkit.list_backends()}
    assert reasons["naive"] is None and reasons["numba"] is None
    assert "failed to load: ImportError: needs libfoo.so" in reasons["tmp-broken"]
    assert "invalid backend name 'Bad'" in reasons["Bad"]
    with pytest.raises(convkit.UnknownBackendError):
        backend_problem("nope")
