"""Backend discovery and selection.

Backends are plugins registered under the entry-point group ``convkit.backends``::

    [project.entry-points."convkit.backends"]
    my-backend = "my_package.module:MyBackend"

Rules (they live here, so read them here):

* Entry points are read once (:func:`refresh_backends` reads them again). A backend's module
  is imported only when that backend is selected, then the instance is memoised; listing
  backends imports nothing.
* Which backend runs, highest precedence first: the ``backend=`` argument of a call, the
  innermost :func:`use_backend` block (a ``ContextVar``: threads and asyncio tasks do not see
  each other's choice), the ``CONVKIT_BACKEND`` environment variable (read at every
  resolution; empty or blank means unset), then :data:`DEFAULT_BACKEND`, ``auto``: the
  fastest candidate per layer, measured once per machine and remembered
  (:mod:`convkit.autotune`). ``CONVKIT_BACKEND=im2col-strided`` restores the default of
  convkit 0.1 and earlier.
* An explicit choice never falls back to another backend. An unknown name raises
  :class:`UnknownBackendError` saying where the name came from, the valid names and the
  closest one.
* A plugin that fails to import breaks nothing else: selecting it raises
  :class:`BackendUnavailableError` chained to the original exception.
* A built-in backend that wraps an optional library (:data:`OPTIONAL_LIBRARIES`: ``torch``)
  is listed only where that library can be found (``importlib.util.find_spec``, which does
  not import it); elsewhere it is *not installed*: :func:`backend_infos` shows it with the
  install command, and selecting it raises :class:`BackendUnavailableError` saying so.
* Two entry points with one name and the same target are one backend; with different targets
  they conflict, and selecting that name raises :class:`BackendUnavailableError`.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import importlib.util
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from convkit.backend import ConvBackend
from convkit.errors import BackendUnavailableError, UnknownBackendError

ENTRY_POINT_GROUP = "convkit.backends"
#: Built-in backends that wrap an optional library: backend name -> (the library's import
#: name, how to install it).
OPTIONAL_LIBRARIES = {
    "torch": ("torch", "install a CPU-only build: pip install torch==2.13.0 --index-url "
                       "https://download.pytorch.org/whl/cpu"),
}
ENV_VAR = "CONVKIT_BACKEND"
DEFAULT_BACKEND = "auto"

_VALID_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_selected: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "convkit_backend", default=None
)


@dataclass
class BackendInfo:
    """What is known about one registered backend, before or after loading it."""

    name: str
    target: str
    """Where it lives, ``module:attribute`` (or ``<runtime>`` for :func:`register_backend`)."""
    distribution: str
    """The distribution that registered it."""
    problem: str | None = None
    """Why it cannot be used, if known without importing it (a name conflict, a bad name,
    an optional library that is not installed)."""
    installed: bool = True
    """False for a built-in whose optional library is missing: not listed, not selectable."""
    entry_points: list[EntryPoint] = field(default_factory=list, repr=False)
    instance: ConvBackend | None = field(default=None, repr=False)
    load_error: BaseException | None = field(default=None, repr=False)


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._infos: dict[str, BackendInfo] | None = None
        self.generation = 0
        """Counts the changes of the registered set (auto keys its memo by it)."""

    def infos(self) -> dict[str, BackendInfo]:
        with self._lock:
            if self._infos is None:
                self._infos = _read_entry_points()
            return self._infos

    def refresh(self) -> None:
        with self._lock:
            self._infos = None
            self.generation += 1

    def add(self, name: str, backend: ConvBackend | type[ConvBackend]) -> None:
        with self._lock:
            infos = self.infos()
            if name in infos:
                raise ValueError(f"a backend named {name!r} is already registered")
            info = BackendInfo(name, "<runtime>", "<runtime>")
            info.instance = _instantiate(name, backend)
            infos[name] = info
            self.generation += 1

    def remove(self, name: str) -> None:
        with self._lock:
            self.infos().pop(name, None)
            self.generation += 1

    def load(self, name: str) -> ConvBackend:
        info = self.infos()[name]
        if info.instance is not None:
            return info.instance
        with self._lock:
            if info.problem is not None:
                raise BackendUnavailableError(f"backend {name!r} cannot be used: {info.problem}")
            if info.load_error is None and info.instance is None:
                try:
                    info.instance = _instantiate(name, info.entry_points[0].load())
                except Exception as exc:  # any failure of third-party code is reported
                    info.load_error = exc
            if info.load_error is not None:
                raise BackendUnavailableError(
                    f"backend {name!r} (from distribution {info.distribution!r}, "
                    f"{info.target}) failed to load: "
                    f"{type(info.load_error).__name__}: {info.load_error}"
                ) from info.load_error
            assert info.instance is not None
            return info.instance


def _read_entry_points() -> dict[str, BackendInfo]:
    infos: dict[str, BackendInfo] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "<unknown>"
        known = infos.get(ep.name)
        if known is None:
            info = BackendInfo(ep.name, ep.value, dist, entry_points=[ep])
            if not _VALID_NAME.fullmatch(ep.name):
                info.problem = (
                    f"invalid backend name {ep.name!r}: use lower-case letters, digits, "
                    "'-', '_' and '.', starting with a letter or digit"
                )
            library, install = OPTIONAL_LIBRARIES.get(ep.name, (None, ""))
            if dist == "convkit" and library and importlib.util.find_spec(library) is None:
                info.installed = False
                info.problem = f"not installed: {library} is missing ({install})"
            infos[ep.name] = info
        elif known.target != ep.value:
            known.entry_points.append(ep)
            sources = ", ".join(
                f"{e.value} from {e.dist.name if e.dist else '<unknown>'}"
                for e in known.entry_points
            )
            known.problem = f"the name is registered more than once, differently: {sources}"
    return infos


def _instantiate(name: str, obj: object) -> ConvBackend:
    backend = obj() if isinstance(obj, type) else obj
    if not isinstance(backend, ConvBackend):
        raise TypeError(
            f"backend {name!r} must be a convkit.ConvBackend subclass or instance, "
            f"got {obj!r}"
        )
    backend.name = name
    return backend


_registry = _Registry()


def list_backends() -> list[str]:
    """Names of every installed backend, sorted; imports none of them."""
    return sorted(name for name, info in _registry.infos().items() if info.installed)


def backend_infos() -> list[BackendInfo]:
    """What is known of every registered backend, sorted by name, the built-ins whose
    optional library is missing included (``installed`` False); imports none of them."""
    return [info for _, info in sorted(_registry.infos().items())]


def backend_problem(name: str) -> str | None:
    """Why the registered backend ``name`` cannot be used, or None if it can.

    Loads it to find out (a listing such as ``convkit backends`` shows the reason); raises
    :class:`UnknownBackendError` if no plugin provides ``name``.
    """
    try:
        get_backend(name)
    except BackendUnavailableError as exc:
        return str(exc)
    return None


def registry_generation() -> int:
    """A number that changes whenever the set of registered backends may have changed."""
    return _registry.generation


def refresh_backends() -> None:
    """Read the entry points again, e.g. after installing a plugin in a running process."""
    _registry.refresh()


def register_backend(name: str, backend: ConvBackend | type[ConvBackend]) -> None:
    """Register ``backend`` under ``name`` for this process, without an entry point.

    Meant for experiments and tests; a package should use the entry-point group.
    Raises ``ValueError`` if the name is taken.
    """
    if not _VALID_NAME.fullmatch(name):
        raise ValueError(f"invalid backend name {name!r}")
    _registry.add(name, backend)


def unregister_backend(name: str) -> None:
    """Forget a backend (until the next :func:`refresh_backends`)."""
    _registry.remove(name)


def resolve_backend_name(name: str | None = None) -> str:
    """The name of the backend a call with ``backend=name`` would use (see the module rules)."""
    return selected_backend(name)[0]


def selected_backend(name: str | None = None) -> tuple[str, str]:
    """The backend a call with ``backend=name`` would use, and what chose it: ``'backend=
    argument'``, ``'use_backend()'``, ``'CONVKIT_BACKEND=<name>'`` or ``'the default'``."""
    if name is not None:
        return _check_known(name, "backend= argument"), "backend= argument"
    chosen = _selected.get()
    if chosen is not None:  # checked again: it may have been unregistered since
        return _check_known(chosen, "use_backend()"), "use_backend()"
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return _check_known(from_env, f"environment variable {ENV_VAR}"), f"{ENV_VAR}={from_env}"
    return _check_known(DEFAULT_BACKEND, "the default"), "the default"


def get_backend(name: str | None = None) -> ConvBackend:
    """The backend instance a call with ``backend=name`` would use, imported on first use.

    Raises :class:`UnknownBackendError` for an unknown name and
    :class:`BackendUnavailableError` for one that cannot be loaded.
    """
    return _registry.load(resolve_backend_name(name))


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[ConvBackend]:
    """Make ``name`` the backend for calls in this block that pass no ``backend=``.

    The choice is a context variable: other threads and asyncio tasks are unaffected.
    Yields the backend instance (loading it, so a broken plugin fails at the ``with``).
    """
    backend = _registry.load(_check_known(name, "use_backend()"))
    token = _selected.set(backend.name)
    try:
        yield backend
    finally:
        _selected.reset(token)


def _check_known(name: object, source: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend name from {source} must be a str, got {name!r}")
    names = list_backends()
    if name in names:
        return name
    missing = _registry.infos().get(name)
    if missing is not None and not missing.installed:
        raise BackendUnavailableError(f"backend {name!r} (from {source}) is {missing.problem}")
    close = difflib.get_close_matches(name.strip().lower(), names, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownBackendError(
        f"unknown backend {name!r} (from {source}); available: {', '.join(names) or 'none'}"
        f"{hint}"
    )
