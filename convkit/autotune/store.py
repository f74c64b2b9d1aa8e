"""The wisdom file: auto's measured decisions on disk, shared by every process of a user.

Format (JSON, ``wisdom.json`` in :func:`~convkit.autotune.settings.cache_dir`)::

    {"format": "convkit-wisdom", "version": 1,
     "environments": {"<environment id>": {
         "machine": {...}, "versions": {...}, "updated": <unix seconds>,
         "decisions": {"<decision key>": {"backend": "numba", "rule": "im2col-strided",
             "reason": "...", "times": {"numba": [seconds, ...], ...}, "dropped": {...},
             "candidates": {"numba": "convkit 0.1.0", ...}, "measured_at": <unix seconds>,
             "tuning_seconds": 0.2}}}}}

Environments (:func:`~convkit.autotune.keys.environment`) other than this process's are kept,
so two virtual environments or machines sharing a home directory do not erase each other's
decisions; the :data:`MAX_ENVIRONMENTS` most recently updated are kept, and per environment
the :data:`MAX_DECISIONS` most recently measured.

Rules: reading takes no lock (writers replace the file atomically). Writing takes a
``filelock`` lock on ``wisdom.json.lock``, re-reads the file, merges this process's new
decision into what other processes wrote, writes a temporary file in the same directory and
``os.replace``-s it over the old one. Nothing here raises into a convolution: a missing,
corrupt, truncated or unreadable file reads as empty, a read-only or missing directory, a
lock timeout or a full disk leave the decision in memory only; each store warns
(:class:`~convkit.errors.AutotuneWarning`) at most once per process.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path

from filelock import FileLock

from convkit.errors import AutotuneWarning

FILE_NAME = "wisdom.json"
FORMAT, VERSION = "convkit-wisdom", 1
#: Environments kept in one file (most recently updated first).
MAX_ENVIRONMENTS = 8
#: Decisions kept per environment (most recently measured first).
MAX_DECISIONS = 10_000
#: Seconds to wait for another process's write before giving up on this one.
LOCK_TIMEOUT = 10.0


def empty() -> dict:
    """A wisdom document with no decisions."""
    return {"format": FORMAT, "version": VERSION, "environments": {}}


class WisdomStore:
    """The decisions in ``directory / FILE_NAME``, read lazily and re-read when it changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self._lock = threading.RLock()
        self._data: dict | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._warned = False

    def lookup(self, env_id: str, key: str) -> dict | None:
        """The stored decision ``key`` of environment ``env_id``, reading the file again if
        another process has replaced it since; None if there is none."""
        with self._lock:
            self._refresh()
            assert self._data is not None
            section = self._data["environments"].get(env_id)
            return None if section is None else section["decisions"].get(key)

    def document(self) -> dict:
        """The whole file as last read (for listings); empty if it is missing or unreadable."""
        with self._lock:
            self._refresh()
            assert self._data is not None
            return self._data

    def record(self, env: dict, key: str, entry: dict) -> bool:
        """Store ``entry`` as decision ``key`` of environment ``env``, merged into what other
        processes wrote. Returns False (after at most one warning) if it could not be written;
        the caller keeps the decision in memory either way."""
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                with FileLock(f"{self.path}.lock", timeout=LOCK_TIMEOUT):
                    data = self._read()
                    section = data["environments"].setdefault(
                        env["id"], {"machine": env["machine"], "versions": env["versions"],
                                    "decisions": {}})
                    section["decisions"][key] = entry
                    section["updated"] = time.time()
                    _prune(data)
                    self._write(data)
                    self._data, self._stamp = data, _stamp(self.path)
                return True
            except Exception as exc:  # never raise into a convolution
                self._warn(f"could not write {self.path} ({type(exc).__name__}: {exc}); "
                           "this process keeps its decisions in memory only")
                return False

    def clear(self) -> int:
        """Delete the file (under the lock); returns how many decisions it held. Raises
        OSError if it cannot (this one is asked for explicitly, not part of a convolution)."""
        with self._lock:
            if not self.path.exists():
                self._data, self._stamp = empty(), None
                return 0
            with FileLock(f"{self.path}.lock", timeout=LOCK_TIMEOUT):
                count = count_decisions(self._read())
                self.path.unlink(missing_ok=True)
            self._data, self._stamp = empty(), None
            return count

    def _refresh(self) -> None:
        stamp = _stamp(self.path)
        if self._data is None or stamp != self._stamp:
            self._data, self._stamp = self._read(), stamp

    def _read(self) -> dict:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):  # nothing stored yet
            return empty()
        except (OSError, UnicodeDecodeError) as exc:
            self._warn(f"cannot read {self.path} ({type(exc).__name__}: {exc}); ignoring it")
            return empty()
        try:
            return _validated(json.loads(text))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self._warn(f"{self.path} is corrupt ({type(exc).__name__}: {exc}); ignoring it "
                       "(the next decision measured replaces it)")
            return empty()

    def _write(self, data: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".wisdom-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"convkit auto: {message}", AutotuneWarning, stacklevel=2)


def count_decisions(data: dict) -> int:
    """Decisions in a wisdom document, over all environments."""
    return sum(len(s["decisions"]) for s in data["environments"].values())


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _validated(data: object) -> dict:
    """``data`` if it is a wisdom document, with malformed decisions left out; ValueError
    if it is not one at all."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a convkit wisdom file")
    if data.get("version") != VERSION:
        return empty()  # another format version: start afresh rather than misread it
    environments = data["environments"]
    if not isinstance(environments, dict):
        raise ValueError("'environments' is not an object")
    for env_id, section in list(environments.items()):
        decisions = section.get("decisions") if isinstance(section, dict) else None
        if not isinstance(decisions, dict):
            del environments[env_id]
            continue
        for key, entry in list(decisions.items()):
            if not (isinstance(entry, dict) and isinstance(entry.get("backend"), str)
                    and isinstance(entry.get("candidates"), dict)):
                del decisions[key]
    return data


def _prune(data: dict) -> None:
    """Keep the newest :data:`MAX_ENVIRONMENTS` environments and :data:`MAX_DECISIONS`
    decisions per environment."""
    envs = data["environments"]
    by_age = sorted(envs, key=lambda e: envs[e].get("updated", 0), reverse=True)
    for env_id in by_age[MAX_ENVIRONMENTS:]:
        del envs[env_id]
    for section in envs.values():
        decisions = section["decisions"]
        if len(decisions) > MAX_DECISIONS:
            newest = sorted(decisions, key=lambda k: decisions[k].get("measured_at", 0),
                            reverse=True)
            for key in newest[MAX_DECISIONS:]:
                del decisions[key]
