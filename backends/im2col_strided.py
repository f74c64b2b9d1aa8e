"""im2col from a strided view: pad once, view every kernel tap, copy into columns, one GEMM.

Columns are laid out ``(groups, Cg*kh*kw, N*Ho*Wo)`` so that each group is a single long
GEMM (a batched matmul over groups) in all three operations, and the weight gradient sums
over a chunk's images inside BLAS. The loops over batch chunks, and the shortcuts that need
no columns, are the base class's (:mod:`~convkit_backends._im2col`).
"""

from __future__ import annotations

import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._common import pad, reuse, window_view
from convkit_backends._im2col import Im2colBackend, taps_per_group
from convkit_backends._workspace import im2col_bytes


class Im2colStridedBackend(Im2colBackend):
    """Columns copied from an ``as_strided`` view; ``(G, K, N*P)`` layout, batched GEMM."""

    description = "GEMM-bound layers other than 3x3: 1x1, large dense kernels, 7x7 stems"

    def _columns(
        self, x: np.ndarray, geom: ConvGeometry, buffer: np.ndarray | None
    ) -> np.ndarray:
        """``x: (n, C, H, W)`` -> columns ``(G, Cg*kh*kw, n*Ho*Wo)`` (one copy)."""
        view = window_view(pad(x, geom), geom).transpose(1, 2, 3, 0, 4, 5)  # (C, kh, kw, n, Ho, Wo)
        cols = reuse(buffer, view.shape, geom.dtype)
        np.copyto(cols, view)
        return cols.reshape(geom.groups, taps_per_group(geom), -1)

    def _multiply_into(
        self, y: np.ndarray, w: np.ndarray, cols: np.ndarray, buffer: np.ndarray | None
    ) -> np.ndarray:
        """One GEMM per group into a ``(G, Cog, n*Ho*Wo)`` product (in ``buffer`` if it is
        large enough), transposed into ``y: (n, Cout, Ho, Wo)``."""
        n, cout, ho, wo = y.shape
        product = reuse(buffer, (*w.shape[:2], cols.shape[2]), y.dtype)
        np.matmul(w, cols, out=product)  # (G, Cog, n*P) == (Cout, n, Ho, Wo)
        y[...] = product.reshape(cout, n, ho, wo).transpose(1, 0, 2, 3)
        return product

    def _column_grads(
        self, w_t: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        grad_cols = np.matmul(w_t, _grouped_output(grad_output, geom))  # (G, K, n*P)
        c, (kh, kw), (ho, wo) = geom.in_channels, geom.kernel_size, geom.out_size
        return grad_cols.reshape(c, kh, kw, geom.batch, ho, wo).transpose(3, 0, 1, 2, 4, 5)

    def _accumulate_weight_grad(
        self, acc: np.ndarray, grad_output: np.ndarray, cols: np.ndarray, geom: ConvGeometry
    ) -> None:
        """One GEMM per group: BLAS sums over the chunk's images."""
        acc += np.matmul(_grouped_output(grad_output, geom), cols.transpose(0, 2, 1))

    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        return im2col_bytes(geom, self.chunk_bytes)


def _grouped_output(grad_output: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """``(n, Cout, Ho, Wo)`` -> ``(G, Cog, n*Ho*Wo)`` (one copy)."""
    cog = geom.out_channels // geom.groups
    return grad_output.transpose(1, 0, 2, 3).reshape(geom.groups, cog, -1)
