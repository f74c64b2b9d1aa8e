"""The numba backend: each call runs the kernel family :mod:`.choice` picks for it."""

from __future__ import annotations

import numpy as np

from convkit.backend import ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends.numba_direct import general, phases, stride_two, three_by_three, wide
from convkit_backends.numba_direct._threads import serialised_on_unsafe_layer
from convkit_backends.numba_direct.choice import Family, choose_kernel

#: The module of each family: ``forward``, ``backward_input`` and ``backward_weight``, as
#: in :class:`NumbaBackend` (:mod:`.phases` takes the backend's method for its stride-1
#: sub-problems as one more argument).
FAMILIES = {Family.THREE_BY_THREE: three_by_three, Family.STRIDE_TWO: stride_two,
            Family.WIDE: wide, Family.PHASES: phases, Family.GENERAL: general}


class NumbaBackend(ConvBackend):
    """Parallel direct-convolution loops compiled by numba."""

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

    def _run(self, method: str, a: np.ndarray, b: np.ndarray, geom: ConvGeometry,
             operand: np.ndarray | None) -> np.ndarray:
        """``method`` of the family :func:`~.choice.choose_kernel` picks; ``operand`` is the
        array whose finiteness the choice may ask about (None for the forward pass)."""
        family = choose_kernel(method, geom, lambda: bool(np.isfinite(operand).all()))
        run = getattr(FAMILIES[family], method)
        if family is Family.PHASES:  # its stride-1 sub-problems go through the choice again
            return run(a, b, geom, getattr(self, method))
        return run(a, b, geom)
