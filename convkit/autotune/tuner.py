"""Measuring candidates against each other, fairly and cheaply, and deciding by a margin.

:func:`measure` runs, for candidates given as zero-argument calls:

1. **Warm-up**: each candidate once, the rule's choice first, untimed as a sample (numba
   compiles here: tens of seconds in a fresh install). A warm-up still running after
   :data:`NOTICE_AFTER` seconds prints one line to stderr saying what compiles and that it
   happens once. A candidate that raises is dropped; the first successful result is the
   one the tuning call returns.
2. **Interleaved rounds** (A B C, B C A, C A B, ...: each round starts one candidate later,
   so none always runs right after another's thread pools): between :data:`MIN_ROUNDS`
   and :data:`MAX_ROUNDS` samples per candidate, fewer once the calls have taken
   :data:`TIME_BUDGET` seconds. A sample is the last of :data:`CALLS_PER_SAMPLE` calls in a
   row: a layer's steady time, with the buffers and warm caches of its own previous call, as
   ``convkit bench`` measures it. A single call right after another candidate's pays for
   their different buffers instead: im2col's weight gradient of a 3x3 256-channel layer at
   14x14 took 16 ms that way, and 11.9 ms in the bench, where it was the fastest backend.
   From the second round on, a candidate whose fastest sample is :data:`DROP_FACTOR` times
   slower than another's median is clearly losing and stops.
3. **Decision**: the fastest median wins over the rule's choice only by a margin noise
   cannot flip: every sample of the winner but its slowest beats the rule's median by more
   than :data:`MARGIN` (5%). One slow sample (a spell of the machine, a neighbour) cannot
   keep a clearly faster candidate out, and a near-tie keeps the rule's choice, so runs on
   one machine agree (cuDNN's benchmark mode flips between near-equal algorithms, pytorch
   #6351) and what is given up is at most the margin. Near-ties among the others go the
   same way in every run too: of the candidates within :data:`MARGIN` of the fastest
   median, the first in ``calls``' order that clears the margin wins (the chooser lists
   them in the rule's order of preference).
"""

from __future__ import annotations

import gc
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

MIN_ROUNDS = 3
MAX_ROUNDS = 5
#: Calls of a candidate in a row per round; the last one is timed.
CALLS_PER_SAMPLE = 2
#: Seconds of calls after which no round beyond :data:`MIN_ROUNDS` starts.
TIME_BUDGET = 1.0
#: A candidate whose best sample is this many times another's median stops early.
DROP_FACTOR = 2.0
#: All the winner's samples but its slowest must beat the rule's median by this fraction.
MARGIN = 0.05
#: Seconds a warm-up may take before stderr says that something is compiling.
NOTICE_AFTER = 2.0


@dataclass
class Measurement:
    """What :func:`measure` found. Times are seconds per call."""

    winner: str
    reason: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    warmup: dict[str, float] = field(default_factory=dict)
    """Seconds of each candidate's first call (compilation included; never a sample)."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Candidates that stopped early or failed, and why."""
    seconds: float = 0.0
    """Wall time of the whole measurement."""
    result: np.ndarray | None = field(default=None, repr=False)
    """The first successful warm-up's output (the tuning call returns it)."""


def measure(
    calls: dict[str, Callable[[], np.ndarray]],
    rule: str,
    label: str,
    on_failure: Callable[[str, BaseException], None] | None = None,
) -> Measurement:
    """Measure ``calls`` (name -> zero-argument call) and choose one (see the module rules).

    ``rule`` is the rule's choice, one of ``calls``; ``label`` names the call in the stderr
    notice; ``on_failure(name, exc)`` is told of each candidate that raises. Raises
    RuntimeError only if every candidate raises.
    """
    start = time.perf_counter()
    order = [rule, *(n for n in calls if n != rule)]
    m = Measurement(winner=rule, reason="")

    def fail(name: str, exc: BaseException) -> None:
        m.dropped[name] = f"raised {type(exc).__name__}: {exc}"
        if on_failure is not None:
            on_failure(name, exc)

    alive = []
    for name in order:
        try:
            out, m.warmup[name] = _warm_up(calls[name], name, label)
        except Exception as exc:
            fail(name, exc)
            continue
        alive.append(name)
        if m.result is None:
            m.result = out
    if not alive:
        raise RuntimeError(f"every candidate failed on {label}: {m.dropped}")
    _timed_rounds(calls, alive, m, fail)
    _decide(m, rule)
    m.seconds = time.perf_counter() - start
    return m


def _warm_up(call: Callable[[], np.ndarray], name: str, label: str) -> tuple[np.ndarray, float]:
    def notice() -> None:
        print(f"convkit auto: the first call of backend {name!r} on {label} is compiling or "
              "loading its kernels; this happens once (later runs reuse them)...",
              file=sys.stderr, flush=True)

    timer = threading.Timer(NOTICE_AFTER, notice)
    timer.daemon = True
    timer.start()
    try:
        t0 = time.perf_counter()
        out = call()
        return out, time.perf_counter() - t0
    finally:
        timer.cancel()


def _timed_rounds(calls: dict, alive: list[str], m: Measurement, fail: Callable) -> None:
    samples = m.samples
    for name in alive:
        samples[name] = []
    spent, was_enabled = 0.0, gc.isenabled()
    gc.disable()
    try:
        for r in range(MAX_ROUNDS):
            if (r >= MIN_ROUNDS and spent > TIME_BUDGET) or (len(alive) < 2 and r >= 1):
                break
            shift = r % len(alive)
            for name in alive[shift:] + alive[:shift]:
                try:
                    for _ in range(CALLS_PER_SAMPLE):
                        t0 = time.perf_counter()
                        calls[name]()
                        dt = time.perf_counter() - t0
                        spent += dt
                except Exception as exc:
                    del samples[name]
                    fail(name, exc)
                    continue
                samples[name].append(dt)
            alive[:] = [n for n in alive if n in samples]
            if r >= 1:
                _drop_losers(alive, m)
    finally:
        if was_enabled:
            gc.enable()


def _drop_losers(alive: list[str], m: Measurement) -> None:
    medians = {n: statistics.median(m.samples[n]) for n in alive}
    for name in list(alive):
        others = [medians[n] for n in alive if n != name]
        if others and min(m.samples[name]) > DROP_FACTOR * min(others):
            alive.remove(name)
            m.dropped[name] = (f"stopped after {len(m.samples[name])} samples: fastest "
                               f"{min(m.samples[name]) * 1e3:.3g} ms, over {DROP_FACTOR:g}x "
                               f"another's median")


def _decide(m: Measurement, rule: str) -> None:
    medians = {n: statistics.median(s) for n, s in m.samples.items() if s}
    fastest = min(medians, key=medians.__getitem__)
    if rule not in medians:
        m.winner, m.reason = fastest, f"tuned: the rule's {rule!r} failed; {fastest!r} was fastest"
        return
    if fastest == rule:
        m.winner, m.reason = rule, f"tuned: the rule's {rule!r} was fastest"
        return
    typical = medians[rule]
    near = [n for n in medians if n != rule and medians[n] <= (1 + MARGIN) * medians[fastest]]
    for name in near:
        samples = sorted(m.samples[name])
        worst = samples[-2] if len(samples) > 2 else samples[-1]  # all but one slow outlier
        if worst < (1 - MARGIN) * typical:
            m.winner = name
            m.reason = (f"tuned: every sample of {name!r} but its slowest (the next slowest "
                        f"{worst * 1e3:.3g} ms) beat the rule's {rule!r} (median "
                        f"{typical * 1e3:.3g} ms) by over {MARGIN:.0%}")
            if name != fastest:
                m.reason += (f"; {fastest!r} was within {MARGIN:.0%} of it "
                             f"({medians[fastest] * 1e3:.3g} ms) and comes later in the "
                             "order of preference")
            return
    m.winner = rule
    m.reason = (f"tuned: {fastest!r} had the best median ({medians[fastest] * 1e3:.3g} ms "
                f"against {typical * 1e3:.3g} ms) but not by the {MARGIN:.0%} margin in "
                f"all its samples but one; kept the rule's {rule!r}")
