"""im2col from a strided view: pad once, view every kernel tap, copy into columns, one GEMM.

Columns are laid out ``(groups, Cg*kh*kw, N*Ho*Wo)`` so that each group is a single long
GEMM (a batched matmul over groups) in all three operations, and the weight gradient sums
over a chunk's images inside BLAS. The batch is processed in chunks whose columns fit in
``chunk_bytes`` (see :class:`~convkit_backends._im2col.Im2colBackend`); the weight
gradient accumulates across chunks.

The 1x1 and stride-1 input-gradient shortcuts, which need no columns, live in the base class
:class:`~convkit_backends._im2col.Im2colBackend`.
"""

from __future__ import annotations

import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._common import (
    col2im,
    grouped_weight,
    pad,
    reuse,
    window_view,
)
from convkit_backends._im2col import Im2colBackend, taps_per_group
from convkit_backends._workspace import im2col_bytes


class Im2colStridedBackend(Im2colBackend):
    """Columns copied from an ``as_strided`` view; ``(G, K, N*P)`` layout, batched GEMM."""

    description = "GEMM-bound layers other than 3x3: 1x1, large dense kernels, 7x7 stems"

    def _forward_columns(
        self, x: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        y = np.empty(geom.output_shape, geom.dtype)
        w = grouped_weight(weight, geom)  # (G, Cog, K)
        cols = y_part = None
        for part in self._chunks(geom):
            sub = geom.with_batch(part.stop - part.start)
            cols = _columns(x[part], sub, cols)  # (G, K, n*P)
            y_part = reuse(y_part, (*w.shape[:2], cols.shape[2]), geom.dtype)
            np.matmul(w, cols, out=y_part)  # (G, Cog, n*P) == (Cout, n, Ho, Wo)
            y[part] = y_part.reshape(geom.out_channels, sub.batch, *geom.out_size).transpose(
                1, 0, 2, 3
            )
        return y

    def _backward_input_columns(
        self, grad_output: np.ndarray, weight: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        grad_x = np.empty(geom.input_shape, geom.dtype)
        w_t = grouped_weight(weight, geom).transpose(0, 2, 1)  # (G, K, Cog)
        c, (kh, kw), (ho, wo) = geom.in_channels, geom.kernel_size, geom.out_size
        for part in self._chunks(geom):
            sub = geom.with_batch(part.stop - part.start)
            grad_cols = np.matmul(w_t, _grouped_output(grad_output[part], sub))  # (G, K, n*P)
            grad_cols = grad_cols.reshape(c, kh, kw, sub.batch, ho, wo).transpose(3, 0, 1, 2, 4, 5)
            grad_x[part] = col2im(grad_cols, sub)
        return grad_x

    def _backward_weight_columns(
        self, x: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        grad_w = np.zeros(geom.weight_shape, geom.dtype)
        acc = grouped_weight(grad_w, geom)  # (G, Cog, K), a view
        cols = None
        for part in self._chunks(geom):
            sub = geom.with_batch(part.stop - part.start)
            cols = _columns(x[part], sub, cols)  # (G, K, n*P)
            acc += np.matmul(_grouped_output(grad_output[part], sub), cols.transpose(0, 2, 1))
        return grad_w

    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        return im2col_bytes(geom, self.chunk_bytes)


def _columns(
    x: np.ndarray, geom: ConvGeometry, buffer: np.ndarray | None = None
) -> np.ndarray:
    """``x: (n, C, H, W)`` -> columns ``(G, Cg*kh*kw, n*Ho*Wo)`` (one copy, into ``buffer``
    if it is large enough: see :func:`~convkit_backends._common.reuse`)."""
    view = window_view(pad(x, geom), geom).transpose(1, 2, 3, 0, 4, 5)  # (C, kh, kw, n, Ho, Wo)
    cols = reuse(buffer, view.shape, geom.dtype)
    np.copyto(cols, view)
    return cols.reshape(geom.groups, taps_per_group(geom), -1)


def _grouped_output(grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``(n, Cout, Ho, Wo)`` -> ``(G, Cog, n*Ho*Wo)`` (one copy)."""
    cog = geom.out_channels // geom.groups
    return grad_output.transpose(1, 0, 2, 3).reshape(geom.groups, cog, -1)
