"""What the user asked auto to do: the one place where auto reads the environment.

The core's rule is that a backend never reads the environment; ``auto`` is the exception,
and all of its reading happens here, at every call (so a change takes effect at once):

* ``CONVKIT_AUTOTUNE``: ``on`` (the default; also ``1``, ``true``, ``yes``) measures layers
  worth measuring; ``off`` (also ``0``, ``false``, ``no``) uses the rules only, for
  reproducible runs such as CI. Empty means unset.
* ``CONVKIT_CACHE_DIR``: the directory of the wisdom file, instead of the user cache
  directory (``platformdirs.user_cache_dir("convkit")``). Empty means unset.
* ``CONVKIT_AUTO_CANDIDATES``: comma-separated backend names auto may choose from, instead of
  every installed backend but ``naive`` and ``torch``. :func:`set_candidates` overrides it
  for the process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

AUTOTUNE_ENV = "CONVKIT_AUTOTUNE"
CACHE_DIR_ENV = "CONVKIT_CACHE_DIR"
CANDIDATES_ENV = "CONVKIT_AUTO_CANDIDATES"

_ON = ("on", "1", "true", "yes")
_OFF = ("off", "0", "false", "no")
_lock = threading.Lock()
_candidates: tuple[str, ...] | None = None


def autotune_enabled() -> bool:
    """Whether auto may measure (``CONVKIT_AUTOTUNE``); ValueError for an unknown value."""
    value = os.environ.get(AUTOTUNE_ENV, "").strip().lower()
    if not value or value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(
        f"environment variable {AUTOTUNE_ENV} must be 'on' or 'off', got {value!r}"
    )


def cache_dir() -> Path:
    """The directory of the wisdom file: ``CONVKIT_CACHE_DIR`` or the user cache directory."""
    value = os.environ.get(CACHE_DIR_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    import platformdirs  # only when the default is needed

    return Path(platformdirs.user_cache_dir("convkit"))


def set_candidates(names: Iterable[str] | None) -> None:
    """Let auto choose only among ``names`` in this process (``None``: back to
    ``CONVKIT_AUTO_CANDIDATES`` or every installed backend). Raises ValueError for an unknown
    name or an empty list, and TypeError for a non-string."""
    global _candidates
    if names is None:
        chosen = None
    else:
        from convkit.registry import list_backends

        chosen = tuple(dict.fromkeys(names))
        known = list_backends()
        for name in chosen:
            if not isinstance(name, str):
                raise TypeError(f"candidate names must be str, got {name!r}")
            if name not in known or name == "auto":
                raise ValueError(
                    f"unknown candidate backend {name!r}; choose among "
                    f"{', '.join(n for n in known if n != 'auto')}"
                )
        if not chosen:
            raise ValueError("set_candidates() needs at least one name (or None)")
    with _lock:
        _candidates = chosen


def configured_candidates() -> tuple[str, ...] | None:
    """The candidates the user named, :func:`set_candidates` first, else
    ``CONVKIT_AUTO_CANDIDATES`` (names as written; unknown ones are dropped later, with a
    warning), else None (every installed backend but the excluded ones)."""
    if _candidates is not None:
        return _candidates
    value = os.environ.get(CANDIDATES_ENV)
    if not value:  # the common case, on every call: keep it cheap
        return None
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    return names or None
