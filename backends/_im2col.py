"""What the two im2col backends share: the column budget, the batch chunks and the loops over
them, and the shortcuts that need no columns.

:class:`Im2colBackend` routes 1x1 stride-1 layers to :mod:`~convkit_backends._pointwise` (no
columns at all) and, where it is cheaper and exact, a stride-1 input gradient to a forward
convolution (:func:`~convkit_backends._common.input_grad_as_forward`). Everything else runs
here chunk by chunk over the batch, each chunk's columns in one buffer reused by the next
chunk, the weight gradient accumulating across chunks. A subclass chooses the columns'
layout: it builds them (``_columns``) and computes the three products on them
(``_multiply_into``, ``_column_grads``, ``_accumulate_weight_grad``).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

import numpy as np

from convkit.backend import ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends import _pointwise as pointwise
from convkit_backends._common import (
    batch_chunks,
    col2im,
    grouped_weight,
    input_grad_as_forward,
)
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
        """``y: (N, Cout, Ho, Wo)``: the grouped weight ``(G, Cog, K)`` times each chunk's
        columns (:meth:`_multiply_into`)."""
        if pointwise.is_pointwise(geom):
            return pointwise.forward(x, weight, geom)
        y = np.empty(geom.output_shape, geom.dtype)
        w = grouped_weight(weight, geom)  # (G, Cog, K)
        cols = product = None
        for part in self._chunks(geom):
            sub = geom.with_batch(part.stop - part.start)
            cols = self._columns(x[part], sub, cols)
            product = self._multiply_into(y[part], w, cols, product)
        return y

    def backward_input(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``grad_x: (N, C, H, W)``: a forward convolution where that is cheaper and exact,
        else each chunk's column gradients (:meth:`_column_grads`) summed onto its images."""
        if pointwise.is_pointwise(geom):
            return pointwise.backward_input(grad_output, weight, geom)
        as_forward = input_grad_as_forward(weight, geom)
        if as_forward is not None:
            return self.forward(grad_output, *as_forward)
        grad_x = np.empty(geom.input_shape, geom.dtype)
        w_t = grouped_weight(weight, geom).transpose(0, 2, 1)  # (G, K, Cog)
        for part in self._chunks(geom):
            sub = geom.with_batch(part.stop - part.start)
            grad_x[part] = col2im(self._column_grads(w_t, grad_output[part], sub), sub)
        return grad_x

    def backward_weight(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``grad_w: (Cout, C/G, kh, kw)``, summed chunk by chunk
        (:meth:`_accumulate_weight_grad`)."""
        if pointwise.is_pointwise(geom):
            return pointwise.backward_weight(x, grad_output, geom)
        grad_w = np.zeros(geom.weight_shape, geom.dtype)
        acc = grouped_weight(grad_w, geom)  # (G, Cog, K), a view
        cols = None
        for part in self._chunks(geom):
            sub = geom.with_batch(part.stop - part.start)
            cols = self._columns(x[part], sub, cols)
            self._accumulate_weight_grad(acc, grad_output[part], cols, sub)
        return grad_w

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
    def _columns(
        self, x: np.ndarray, geom: ConvGeometry, buffer: np.ndarray | None
    ) -> np.ndarray:
        """``x: (n, C, H, W)`` -> its columns, ``K = Cg*kh*kw`` rows per group, in the
        subclass's layout; in ``buffer`` (the previous chunk's) if it is large enough
        (:func:`~convkit_backends._common.reuse`)."""

    @abc.abstractmethod
    def _multiply_into(
        self, y: np.ndarray, w: np.ndarray, cols: np.ndarray, buffer: np.ndarray | None
    ) -> np.ndarray | None:
        """``y: (n, Cout, Ho, Wo) = w @ cols`` for the grouped weight ``w: (G, Cog, K)``;
        returns the buffer of the product, if it needs one, for the next chunk to reuse."""

    @abc.abstractmethod
    def _column_grads(
        self, w_t: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        """``w_t: (G, K, Cog)`` times ``grad_output: (n, Cout, Ho, Wo)``: the column
        gradients ``(n, C, kh, kw, Ho, Wo)``."""

    @abc.abstractmethod
    def _accumulate_weight_grad(
        self, acc: np.ndarray, grad_output: np.ndarray, cols: np.ndarray, geom: ConvGeometry
    ) -> None:
        """``acc: (G, Cog, K) +=`` ``grad_output: (n, Cout, Ho, Wo)`` times the columns'
        transpose."""


def taps_per_group(geom: ConvGeometry) -> int:
    """``K = Cg*kh*kw``: the rows of one group's columns, the columns of its grouped weight."""
    return geom.weight_shape[1] * geom.kernel_size[0] * geom.kernel_size[1]
