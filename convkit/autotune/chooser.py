"""The decision for each call: remembered in memory, stored on disk, measured once.

For a call (operation x geometry), :meth:`Chooser.choose` answers, cheapest first:

1. this process's memo (a dict lookup keyed by the operation, the geometry, the thread
   count and the settings in force: precision policy, candidates, ``CONVKIT_AUTOTUNE``,
   cache directory, registry state);
2. the rule (:mod:`~convkit.autotune.rules`) when measuring is off, not worth it, or there
   is one candidate;
3. the wisdom file (:mod:`~convkit.autotune.store`), if it holds a decision for this
   environment whose candidates' versions are today's;
4. a measurement (:mod:`~convkit.autotune.tuner`) on the call's own arrays, which the call
   then returns the result of, stored for every later process.

Threads: one lock per decision key; a thread that meets a key being measured waits for the
decision instead of disturbing the timings.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from convkit.backend import ConvBackend
from convkit.errors import AutotuneWarning, MemoryBudgetError, UnsupportedConfigurationError
from convkit.geometry import ConvGeometry
from convkit.memory import check_fits
from convkit.precision import get_precision
from convkit.registry import get_backend, registry_generation

from . import candidates, keys, rules, settings, tuner
from .store import WisdomStore

Source = Literal["rule", "stored", "tuned"]
#: Decisions one process keeps in memory (the wisdom file keeps them all).
MAX_MEMO = 100_000


@dataclass
class Explanation:
    """Which backend auto runs for one call, and why. Times are seconds per call."""

    op: str
    """``'forward'``, ``'input-grad'`` or ``'weight-grad'``."""
    call: str
    """The geometry and thread count, e.g. ``float32 n8 c64 o64 56x56 k3x3 ... t2``."""
    backend: str
    source: Source
    """``'rule'`` (not measured), ``'stored'`` (measured earlier, read from the wisdom file)
    or ``'tuned'`` (measured by this process)."""
    reason: str
    candidates: tuple[str, ...]
    times: dict[str, list[float]] = field(default_factory=dict)
    """Each candidate's timed samples (empty for a rule)."""
    dropped: dict[str, str] = field(default_factory=dict)
    warmup_seconds: dict[str, float] = field(default_factory=dict)
    """Each candidate's first call when measured by this process (compilation included)."""
    tuning_seconds: float = 0.0
    """Wall time this process spent measuring (0 unless ``source == 'tuned'``)."""
    key: str | None = None
    """The wisdom file's key, for a call worth measuring."""
    pending: bool = False
    """True when the rule answers for now but the first call will measure."""

    @property
    def medians(self) -> dict[str, float]:
        """Each measured candidate's median seconds."""
        return {n: statistics.median(s) for n, s in self.times.items() if s}

    def __str__(self) -> str:
        lines = [f"{self.op} {self.call}: {self.backend} ({self.source})", f"  {self.reason}"]
        if self.pending:
            lines.append("  not measured yet: the first call measures the candidates")
        for name, median in sorted(self.medians.items(), key=lambda kv: kv[1]):
            lines.append(f"  {name:<16} median {median * 1e3:9.4f} ms over "
                         f"{len(self.times[name])} samples")
        lines.extend(f"  {name:<16} {why}" for name, why in self.dropped.items())
        return "\n".join(lines)


@dataclass(frozen=True)
class Choice:
    backend: ConvBackend
    explanation: Explanation


_MethodArrays = tuple[np.ndarray, np.ndarray]


class Chooser:
    """Decisions of one process (see the module rules); :data:`chooser` is the instance."""

    def __init__(self) -> None:
        self._memo: dict[tuple, Choice] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._stores: dict[Path, WisdomStore] = {}
        self.stats: Counter[str] = Counter()
        """Decisions made in this process by source (``rule``, ``stored``, ``tuned``)."""

    def memo_key(self, op: str, geom: ConvGeometry) -> tuple:
        """Everything a decision depends on, cheaply (microseconds)."""
        return (op, geom, keys.thread_count(), get_precision(),
                settings.configured_candidates(), settings.autotune_enabled(),
                os.environ.get(settings.CACHE_DIR_ENV), registry_generation())

    def choose(
        self, op: str, geom: ConvGeometry, arrays: _MethodArrays | None = None,
        retune: bool = False,
    ) -> tuple[Choice, np.ndarray | None]:
        """The choice for ``op`` on ``geom``, and the result if answering meant measuring.

        ``arrays`` are the call's two operands (as the backend method takes them); without
        them a call that needs measuring gets the rule's choice, marked ``pending``.
        ``retune`` (with ``arrays``) measures again a call worth measuring, whatever this
        process or the wisdom file decided before.
        """
        memo_key = self.memo_key(op, geom)
        choice = None if retune else self._memo.get(memo_key)
        if choice is not None:
            return choice, None
        return self._decide(memo_key, op, geom, arrays, retune)

    def store(self) -> WisdomStore:
        """The wisdom file of the cache directory in force."""
        directory = settings.cache_dir()
        store = self._stores.get(directory)
        if store is None:
            store = self._stores.setdefault(directory, WisdomStore(directory))
        return store

    def forget(self) -> None:
        """Drop this process's memo (decisions are looked up again)."""
        self._memo.clear()

    def _decide(
        self, memo_key: tuple, op: str, geom: ConvGeometry, arrays: _MethodArrays | None,
        retune: bool = False,
    ) -> tuple[Choice, np.ndarray | None]:
        _, _, threads, _, configured, enabled, _, _ = memo_key
        backends = candidates.loaded_candidates(configured)
        names = candidates.usable(backends, geom)
        call = f"{keys.geometry_text(geom)} t{threads}"
        if not names:
            return self._remember(memo_key, self._no_candidate(op, geom, call, backends)), None
        rule, why = rules.rule_choice(geom, names)
        explanation = Explanation(op, call, rule, "rule", why, names)
        if not enabled:
            explanation.reason += f" ({settings.AUTOTUNE_ENV}=off: the rules only)"
        elif len(names) == 1:
            explanation.reason += " (the only candidate)"
        elif not rules.worth_tuning(geom):
            explanation.reason += (f" ({geom.flops:.3g} FLOPs, under the "
                                   f"{rules.TUNE_MIN_FLOPS:.0e} worth measuring)")
        else:
            return self._measured(memo_key, op, geom, arrays, backends, explanation, retune)
        return self._remember(memo_key, Choice(backends[rule], explanation)), None

    def _measured(
        self, memo_key: tuple, op: str, geom: ConvGeometry, arrays: _MethodArrays | None,
        backends: dict[str, ConvBackend], rule: Explanation, retune: bool,
    ) -> tuple[Choice, np.ndarray | None]:
        names = rule.candidates
        key = keys.decision_key(op, geom, memo_key[2], names)
        rule.key = key
        with self._lock_for(key):
            choice = self._memo.get(memo_key)  # another thread decided while this one waited
            if choice is not None and not retune:
                return choice, None
            store, env = self.store(), keys.environment()
            versions = keys.candidate_versions(names)
            entry = None if retune and arrays is not None else store.lookup(env["id"], key)
            if entry is not None and entry["candidates"] == versions and (
                    entry["backend"] in names):
                explanation = Explanation(
                    op, rule.call, entry["backend"], "stored", str(entry.get("reason", "")),
                    names, _times(entry.get("times")), dict(entry.get("dropped") or {}),
                    key=key)
                return self._remember(memo_key, Choice(backends[entry["backend"]],
                                                       explanation)), None
            if arrays is None:
                rule.pending = True
                return Choice(backends[rule.backend], rule), None
            m = self._measure(op, geom, arrays, backends, rule)
            explanation = Explanation(op, rule.call, m.winner, "tuned", m.reason, names,
                                      m.samples, m.dropped, m.warmup, m.seconds, key)
            store.record(env, key, {
                "backend": m.winner, "rule": rule.backend, "reason": m.reason,
                "times": m.samples, "dropped": m.dropped, "candidates": versions,
                "warmup_seconds": m.warmup, "tuning_seconds": m.seconds,
                "measured_at": time.time(),
            })
            return self._remember(memo_key, Choice(backends[m.winner], explanation)), m.result

    def _measure(
        self, op: str, geom: ConvGeometry, arrays: _MethodArrays,
        backends: dict[str, ConvBackend], rule: Explanation,
    ) -> tuner.Measurement:
        method = keys.METHODS[op]
        calls, too_big = {}, {}
        for name in rules.by_preference(rule.candidates):
            try:
                if name != rule.backend:  # the call itself checked the rule's choice
                    _check_memory(backends[name], method, geom)
            except MemoryBudgetError as exc:
                too_big[name] = f"not measured: {exc}"
                continue
            calls[name] = functools.partial(getattr(backends[name], method), *arrays, geom)

        def failed(name: str, exc: BaseException) -> None:
            candidates.warn_dropped(name, f"candidate {name!r} raised {type(exc).__name__} "
                                          f"while measuring {op} {rule.call}: {exc}; left out")

        m = tuner.measure(calls, rule.backend, f"{op} {rule.call}", on_failure=failed)
        m.dropped.update(too_big)
        return m

    def _no_candidate(
        self, op: str, geom: ConvGeometry, call: str, backends: dict[str, ConvBackend]
    ) -> Choice:
        if backends:  # candidates load, but none takes this call
            reasons = "; ".join(f"{n}: {_why_not(b, geom)}" for n, b in backends.items())
            raise UnsupportedConfigurationError(
                f"backend 'auto': no candidate can run this call ({reasons})")
        warnings.warn("convkit auto: no candidate backend loads; using the naive reference "
                      "loops (slow)", AutotuneWarning, stacklevel=4)
        return Choice(get_backend("naive"),
                      Explanation(op, call, "naive", "rule", "no candidate loads", ()))

    def _remember(self, memo_key: tuple, choice: Choice) -> Choice:
        if len(self._memo) >= MAX_MEMO:  # a program of ever-new shapes: start over
            self._memo.clear()
        self._memo[memo_key] = choice
        self.stats[choice.explanation.source] += 1
        return choice

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())


def _check_memory(backend: ConvBackend, method: str, geom: ConvGeometry) -> None:
    out_shape = {"forward": geom.output_shape, "backward_input": geom.input_shape,
                 "backward_weight": geom.weight_shape}[method]
    parts = {"result": math.prod(out_shape) * geom.dtype.itemsize,
             "workspace": backend.workspace_bytes(geom, method)}
    check_fits(sum(parts.values()), f"{method} on candidate {backend.name!r}", parts)


def _why_not(backend: ConvBackend, geom: ConvGeometry) -> str:
    reason = backend.capabilities.unsupported_reason(geom)
    return reason or (f"error factor {backend.capabilities.error_factor:g} is refused by the "
                      f"{get_precision()!r} precision policy")


def _times(value: object) -> dict[str, list[float]]:
    """A stored entry's samples, or {} if malformed (the file is not trusted)."""
    try:
        return {str(k): [float(t) for t in v] for k, v in value.items()}  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return {}


#: The process's decisions.
chooser = Chooser()
