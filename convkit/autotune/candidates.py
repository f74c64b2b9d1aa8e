"""Which backends auto chooses among.

Every installed backend except :data:`EXCLUDED` (auto itself, the ``naive`` reference loops
and the ``torch`` yardstick), or the names the user gave (:func:`~convkit.autotune.
settings.set_candidates`, ``CONVKIT_AUTO_CANDIDATES``; naming ``naive`` or ``torch`` there
makes them candidates). For one call, a candidate must also support its configuration
(its :class:`~convkit.Capabilities`) and have an accuracy the precision policy allows
(:func:`convkit.precision.allows`). A candidate that fails to load, or an unknown name, is
dropped with one warning per name and process; it never breaks a call.
"""

from __future__ import annotations

import threading
import warnings

from convkit.backend import ConvBackend
from convkit.errors import AutotuneWarning
from convkit.geometry import ConvGeometry
from convkit.precision import allows
from convkit.registry import get_backend, list_backends, registry_generation

EXCLUDED: frozenset[str] = frozenset({"auto", "naive", "torch"})

_lock = threading.Lock()
_loaded: dict[tuple, dict[str, ConvBackend]] = {}
_warned: set[str] = set()


def loaded_candidates(configured: tuple[str, ...] | None) -> dict[str, ConvBackend]:
    """``{name: backend}`` of the candidates that load, for the user's ``configured`` names
    (None: every installed backend but :data:`EXCLUDED`). Memoised per registry state."""
    memo_key = (registry_generation(), configured)
    found = _loaded.get(memo_key)
    if found is not None:
        return found
    with _lock:
        known = list_backends()
        if configured is None:
            names = [n for n in known if n not in EXCLUDED]
        else:
            names = [n for n in configured if n != "auto"]
            for name in [n for n in names if n not in known]:
                _warn_once(name, f"candidate {name!r} is not an installed backend; ignored")
                names.remove(name)
        found = {}
        for name in names:
            try:
                found[name] = get_backend(name)
            except Exception as exc:  # a broken plugin is dropped, never fatal
                _warn_once(name, f"candidate {name!r} cannot be used and is left out: {exc}")
        _loaded.clear()  # one registry state at a time
        _loaded[memo_key] = found
        return found


def usable(backends: dict[str, ConvBackend], geom: ConvGeometry) -> tuple[str, ...]:
    """The names in ``backends`` that support ``geom`` under the precision policy in force."""
    return tuple(
        name for name, backend in backends.items()
        if allows(backend.capabilities.error_factor, backend.capabilities.error_spread)
        and backend.capabilities.unsupported_reason(geom) is None
    )


def warn_dropped(name: str, message: str) -> None:
    """Warn, once per candidate and process, that ``name`` failed while being measured."""
    _warn_once(f"measuring {name}", message)


def _warn_once(topic: str, message: str) -> None:
    if topic not in _warned:
        _warned.add(topic)
        warnings.warn(f"convkit auto: {message}", AutotuneWarning, stacklevel=3)
