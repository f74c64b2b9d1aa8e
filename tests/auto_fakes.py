"""Fake backends for auto's tests: deterministic speeds, call counts, failures on demand.

Each computes the right answer (by im2col-strided) after sleeping ``delay`` seconds, so a
slow and a fast fake differ by far more than any timing noise. Also used by the subprocess
scripts of ``tests/test_auto_cache.py`` (the tests directory is put on their path).
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

import convkit
from convkit import Capabilities, ConvBackend
from convkit.geometry import ConvGeometry

SLOW, FAST = "aa-slow", "zz-fast"
"""The rule picks the first by name among candidates it has no rule for: the slow one."""


class Fake(ConvBackend):
    """Sleeps ``delay`` seconds per call, counts its calls, raises if ``fail``."""

    def __init__(self, delay: float = 0.0, fail: bool = False, error_factor: float = 1.0,
                 dtypes: tuple[str, ...] = ("float32", "float64")) -> None:
        self.delay, self.fail = delay, fail
        self.capabilities = Capabilities(dtypes=frozenset(dtypes), error_factor=error_factor)
        self.calls: Counter[str] = Counter()

    def _work(self, method: str, a: np.ndarray, b: np.ndarray, geom: ConvGeometry):
        self.calls[method] += 1
        if self.fail:
            raise RuntimeError(f"{self.name} is broken")
        time.sleep(self.delay)
        return getattr(convkit.get_backend("im2col-strided"), method)(a, b, geom)

    def forward(self, x, weight, geom):
        return self._work("forward", x, weight, geom)

    def backward_input(self, grad_output, weight, geom):
        return self._work("backward_input", grad_output, weight, geom)

    def backward_weight(self, x, grad_output, geom):
        return self._work("backward_weight", x, grad_output, geom)


def register(**fakes: Fake) -> dict[str, Fake]:
    """Register ``name=Fake(...)`` (underscores become dashes) and make them auto's only
    candidates; returns them by name."""
    named = {name.replace("_", "-"): fake for name, fake in fakes.items()}
    for name, fake in named.items():
        convkit.register_backend(name, fake)
    convkit.autotune.set_candidates(list(named))
    return named


def slow_and_fast(delay: float = 0.05) -> dict[str, Fake]:
    """The usual pair: :data:`SLOW` sleeping ``delay`` seconds per call and :data:`FAST`.

    FAST wins only if every one of its samples beats SLOW's median by 5%; a sample of FAST
    that a loaded machine delays by ``delay`` keeps SLOW (the rule's choice): 50 ms makes
    that rare even beside other test runs."""
    return register(aa_slow=Fake(delay), zz_fast=Fake())


def arrays(seed: int = 0, shape=(2, 3, 8, 8), kernel=(4, 3, 3, 3)):
    """A tiny layer's ``x`` and ``weight`` (float64)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), rng.standard_normal(kernel)
