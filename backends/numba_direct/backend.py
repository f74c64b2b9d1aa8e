"""The numba backend: each call runs the kernel family :mod:`.choice` picks for it."""

from __future__ import annotations

import numba
import numpy as np

from convkit.backend import ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends._workspace import remembered
from convkit_backends.numba_direct import (
    general,
    phases,
    stride_two,
    three_by_three,
    vector_rows,
    wide,
)
from convkit_backends.numba_direct._threads import serialised_on_unsafe_layer
from convkit_backends.numba_direct.choice import (
    Family,
    candidate_rules,
    choose_kernel,
    finite_check_bytes,
)

#: The module of each family: ``forward``, ``backward_input``, ``backward_weight`` and
#: ``workspace_bytes``, as in :class:`NumbaBackend` (:mod:`.phases` takes the backend's
#: method for its stride-1 sub-problems as one more argument; :mod:`.vector_rows` has the
#: forward pass only).
FAMILIES = {Family.THREE_BY_THREE: three_by_three, Family.STRIDE_TWO: stride_two,
            Family.WIDE: wide, Family.VECTOR_ROWS: vector_rows, Family.PHASES: phases,
            Family.GENERAL: general}


class NumbaBackend(ConvBackend):
    """Parallel direct-convolution loops compiled by numba."""

    description = "3x3 layers (stride 1 and 2) of every width, depthwise, few input channels"

    @serialised_on_unsafe_layer
    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        return self._run("forward", x, weight, geom, None)

    @serialised_on_unsafe_layer
    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        return self._run("backward_input", grad_output, weight, geom, weight)

    @serialised_on_unsafe_layer
    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        return self._run("backward_weight", x, grad_output, geom, x)

    @remembered(numba.get_num_threads)
    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        """The largest workspace of the families that may run ``method`` for ``geom``
        (whether an operand is finite can move the call down :mod:`.choice`'s table, and
        ``geom`` does not tell), plus the finiteness check's bool array if one is made.

        Each family counts its own buffers (its ``workspace_bytes``). The figures follow
        the allocations and err on the high side: phases and temporaries that live one after
        the other are added, and the padding-NaN repair is counted as if a non-finite value
        were found.
        """
        rules = candidate_rules(method, geom)
        largest = max(self._family_workspace(rule.family, geom, method) for rule in rules)
        checked = any(rule.finite_operand for rule in rules)
        return largest + (finite_check_bytes(method, geom) if checked else 0)

    def _family_workspace(self, family: Family, geom: ConvGeometry, method: str) -> int:
        if family is Family.PHASES:
            return phases.workspace_bytes(geom, method, self.workspace_bytes)
        return FAMILIES[family].workspace_bytes(geom, method)

    def _run(self, method: str, a: np.ndarray, b: np.ndarray, geom: ConvGeometry,
             operand: np.ndarray | None) -> np.ndarray:
        """``method`` of the family :func:`~.choice.choose_kernel` picks; ``operand`` is the
        array whose finiteness the choice may ask about (None for the forward pass)."""
        family = choose_kernel(method, geom, lambda: bool(np.isfinite(operand).all()))
        run = getattr(FAMILIES[family], method)
        if family is Family.PHASES:  # its stride-1 sub-problems go through the choice again
            return run(a, b, geom, getattr(self, method))
        return run(a, b, geom)
