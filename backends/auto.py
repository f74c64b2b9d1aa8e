"""``auto``: each call runs on the backend measured fastest for its layer on this machine.

A thin plugin over :mod:`convkit.autotune`, which holds the rules, the measuring and the
wisdom file (and, as the one exception to "a backend never reads the environment", reads
``CONVKIT_AUTOTUNE``, ``CONVKIT_CACHE_DIR`` and ``CONVKIT_AUTO_CANDIDATES``). The core has
validated the call for auto's capabilities, which are the union of its candidates', so each
method asks the chooser for the backend and calls that backend's method directly; the first
call of a layer worth measuring returns the result of the measurement's own run.
"""

from __future__ import annotations

import threading

import numpy as np

from convkit.autotune import settings, tune_geometry
from convkit.autotune.candidates import loaded_candidates
from convkit.autotune.chooser import chooser
from convkit.autotune.keys import OPS
from convkit.backend import Capabilities, ConvBackend
from convkit.geometry import ConvGeometry
from convkit.precision import allows, get_precision
from convkit.registry import get_backend, registry_generation


class AutoBackend(ConvBackend):
    """Delegates each call to the candidate chosen for it (see :mod:`convkit.autotune`)."""

    description = "the default: the fastest candidate for each layer, measured once and remembered"

    def __init__(self) -> None:
        self._capabilities: dict[tuple, Capabilities] = {}
        self._lock = threading.Lock()
        # The core asks workspace_bytes(geom, method), then calls method(..., geom): the
        # method reuses that answer for the same geometry object instead of looking it up
        # again (per thread; a pending answer is looked up again, with the arrays).
        self._last = threading.local()

    @property  # type: ignore[override]
    def capabilities(self) -> Capabilities:
        """Everything some candidate allowed by the precision policy accepts; its error
        factor is the largest of theirs (1 under the default ``'exact'`` policy)."""
        key = (registry_generation(), settings.configured_candidates(),
               get_precision())
        found = self._capabilities.get(key)
        if found is None:
            found = _union(key[1])
            with self._lock:
                self._capabilities = {key: found}
        return found

    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        return self._run("forward", x, weight, geom)

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        return self._run("backward_input", grad_output, weight, geom)

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        return self._run("backward_weight", x, grad_output, geom)

    def prepare(self, geom: ConvGeometry, method: str) -> None:
        """Measure the candidates for ``geom`` now, unless decided (or the call is one the
        rule decides): the harness keeps tuning out of its timings this way."""
        tune_geometry(geom, OPS[method])

    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        """The chosen backend's (for a layer still to be measured, the rule's choice's: the
        measurement skips a candidate whose own workspace would not fit)."""
        choice, _ = chooser.choose(OPS[method], geom)
        self._last.answer = (geom, method, choice)
        return choice.backend.workspace_bytes(geom, method)

    def retained_bytes(self) -> int:
        """What the candidates keep between calls (auto calls the shared instances)."""
        candidates = loaded_candidates(settings.configured_candidates()).values()
        return sum(candidate.retained_bytes() for candidate in candidates)

    def release_retained(self) -> None:
        """Let every loaded candidate go of what it keeps."""
        for candidate in loaded_candidates(settings.configured_candidates()).values():
            candidate.release_retained()

    def _run(self, method: str, a: np.ndarray, b: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        last = getattr(self._last, "answer", None)
        self._last.answer = None
        if (last is not None and last[0] is geom and last[1] == method
                and not last[2].explanation.pending):
            return getattr(last[2].backend, method)(a, b, geom)
        choice, result = chooser.choose(OPS[method], geom, (a, b))
        if result is not None:
            return result
        return getattr(choice.backend, method)(a, b, geom)


def _union(configured: tuple[str, ...] | None) -> Capabilities:
    found = [b.capabilities for b in loaded_candidates(configured).values()
             if allows(b.capabilities.error_factor, b.capabilities.error_spread)]
    if not found:  # nothing loads: auto falls back to the reference loops
        return get_backend("naive").capabilities
    return Capabilities(
        dtypes=frozenset().union(*(c.dtypes for c in found)),
        groups=any(c.groups for c in found),
        dilation=any(c.dilation for c in found),
        stride=any(c.stride for c in found),
        padding=any(c.padding for c in found),
        error_factor=max(c.error_factor for c in found),
        error_spread=max(c.error_spread for c in found),
    )
