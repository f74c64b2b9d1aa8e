"""What the two im2col backends share: the column budget and the shortcuts that need no columns.

A subclass implements the three operations on columns (``_forward_columns``,
``_backward_input_columns``, ``_backward_weight_columns``). This class routes 1x1 stride-1
layers to :mod:`~convkit_backends._pointwise` (no columns at all) and, where it is cheaper
and exact, a stride-1 input gradient to a forward convolution
(:func:`~convkit_backends._common.input_grad_as_forward`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

import numpy as np

from convkit.backend import ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends import _pointwise as pointwise
from convkit_backends._common import batch_chunks, input_grad_as_forward
from convkit_backends._workspace import column_count

#: Default cap on the temporary column buffer of the im2col backends, in bytes.
DEFAULT_COLUMN_BUDGET = 256 * 2**20
#: Columns per batch chunk when the budget allows more (but at least one image's): a chunk
#: this small is still in the last-level cache when the GEMM reads what the copy wrote, and
#: one buffer serves every chunk. Measured on a 64-channel 3x3 layer at 56x56, batch 8
#: (7 MiB of columns per image): 19 ms in 1-image chunks against 24.5 ms in one chunk on
#: one thread; on two threads, alternating in one process, the two were within 6%.
CACHE_CHUNK_BYTES = 8 * 2**20


class Im2colBackend(ConvBackend):
    """Base of the im2col backends. ``column_budget``: most bytes of columns per batch chunk.

    The batch is processed in chunks of images whose columns fit in :attr:`chunk_bytes`, the
    budget or :data:`CACHE_CHUNK_BYTES` if that is smaller (at least one image per chunk),
    reusing one buffer; the weight gradient accumulates across chunks. Set the budget per
    instance, ``Im2colStridedBackend(column_budget=4 * 2**20)``, or on the instance the
    registry hands out, ``convkit.get_backend("im2col-strided").column_budget = 4 * 2**20``.
    """

    def __init__(self, column_budget: int = DEFAULT_COLUMN_BUDGET) -> None:
        self.column_budget = column_budget

    @property
    def column_budget(self) -> int:
        return self._column_budget

    @column_budget.setter
    def column_budget(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"column_budget must be an int (bytes), got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"column_budget must be at least 1 byte, got {value}")
        self._column_budget = int(value)

    def forward(self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry) -> np.ndarray:
        if pointwise.is_pointwise(geom):
            return pointwise.forward(x, weight, geom)
        return self._forward_columns(x, weight, geom)

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        if pointwise.is_pointwise(geom):
            return pointwise.backward_input(grad_output, weight, geom)
        as_forward = input_grad_as_forward(weight, geom)
        if as_forward is not None:
            return self.forward(grad_output, *as_forward)
        return self._backward_input_columns(grad_output, weight, geom)

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        if pointwise.is_pointwise(geom):
            return pointwise.backward_weight(x, grad_output, geom)
        return self._backward_weight_columns(x, grad_output, geom)

    @property
    def chunk_bytes(self) -> int:
        """Bytes of columns per batch chunk: ``column_budget``, at most
        :data:`CACHE_CHUNK_BYTES` (a chunk holds at least one image whatever its size)."""
        return min(self.column_budget, CACHE_CHUNK_BYTES)

    def _chunks(self, geom: ConvGeometry) -> Iterator[slice]:
        """Slices of the batch, each with at most :attr:`chunk_bytes` of columns."""
        return batch_chunks(geom, self._column_bytes(geom), self.chunk_bytes)

    def _column_bytes(self, geom: ConvGeometry) -> int:
        """Bytes of columns one image of ``geom`` needs (both layouts hold the same)."""
        return column_count(geom) * geom.dtype.itemsize

    @abc.abstractmethod
    def _forward_columns(
        self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray: ...

    @abc.abstractmethod
    def _backward_input_columns(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray: ...

    @abc.abstractmethod
    def _backward_weight_columns(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray: ...


def taps_per_group(geom: ConvGeometry) -> int:
    """``K = Cg*kh*kw``: the rows of one group's columns, the columns of its grouped weight."""
    return geom.weight_shape[1] * geom.kernel_size[0] * geom.kernel_size[1]
