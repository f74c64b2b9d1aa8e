"""im2col by gathering: ``np.take`` with flat indices precomputed (and cached) per geometry.

Columns are laid out per image, ``(N, groups, Cg*kh*kw, Ho*Wo)``, so the forward GEMM
``(G, Cog, K) @ (N, G, K, P)`` lands directly in NCHW order with no transpose. The loops over
batch chunks, and the shortcuts that need no columns, are the base class's
(:mod:`~convkit_backends._im2col`).
"""

from __future__ import annotations

import functools

import numpy as np

from convkit.geometry import ConvGeometry
from convkit_backends._common import pad, per_group, reuse
from convkit_backends._im2col import Im2colBackend, taps_per_group
from convkit_backends._workspace import im2col_bytes


class Im2colTakeBackend(Im2colBackend):
    """Columns gathered with ``np.take``; per-image ``(N, G, K, P)`` layout."""

    description = "the same layers as im2col-strided; often faster on small ones"

    def _columns(
        self, x: np.ndarray, geom: ConvGeometry, buffer: np.ndarray | None
    ) -> np.ndarray:
        """``x: (n, C, H, W)`` -> columns ``(n, G, Cg*kh*kw, Ho*Wo)``, gathered by one
        ``np.take`` with the cached indices of one channel plane."""
        xp = pad(x, geom)
        planes = xp.reshape(xp.shape[0] * xp.shape[1], -1)  # (n*C, Hp*Wp)
        indices = _gather_indices(*_index_key(geom))
        cols = reuse(buffer, (planes.shape[0], indices.size), geom.dtype)  # (n*C, kh*kw*Ho*Wo)
        # mode="clip" (the indices are in range by construction): with the default "raise",
        # np.take gathers into a temporary and copies that into ``out``
        np.take(planes, indices, axis=1, out=cols, mode="clip")
        return cols.reshape(xp.shape[0], geom.groups, taps_per_group(geom), -1)

    def _multiply_into(
        self, y: np.ndarray, w: np.ndarray, cols: np.ndarray, buffer: np.ndarray | None
    ) -> None:
        """``(G, Cog, K) @ (n, G, K, P)`` straight into ``y: (n, Cout, Ho, Wo)``: no buffer."""
        np.matmul(w, cols, out=y.reshape(*cols.shape[:2], w.shape[1], -1))

    def _column_grads(
        self, w_t: np.ndarray, grad_output: np.ndarray, geom: ConvGeometry
    ) -> np.ndarray:
        grad_cols = np.matmul(w_t, per_group(grad_output, geom))  # (n, G, K, P)
        return grad_cols.reshape(geom.batch, geom.in_channels, *geom.kernel_size, *geom.out_size)

    def _accumulate_weight_grad(
        self, acc: np.ndarray, grad_output: np.ndarray, cols: np.ndarray, geom: ConvGeometry
    ) -> None:
        """One GEMM per image and group."""
        grad_y = per_group(grad_output, geom)  # (n, G, Cog, P)
        for cols_n, grad_y_n in zip(cols, grad_y, strict=True):
            acc += np.matmul(grad_y_n, cols_n.transpose(0, 2, 1))

    def workspace_bytes(self, geom: ConvGeometry, method: str) -> int:
        # One channel's indices (intp) are kept (cached) besides the columns.
        (kh, kw), (ho, wo) = geom.kernel_size, geom.out_size
        return im2col_bytes(geom, self.chunk_bytes) + kh * kw * ho * wo * np.intp(0).itemsize


def _index_key(geom: ConvGeometry) -> tuple:
    return geom.padded_size[1], geom.kernel_size, geom.stride, geom.dilation, geom.out_size


@functools.lru_cache(maxsize=16)
def _gather_indices(
    plane_width: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    out_size: tuple[int, int],
) -> np.ndarray:
    """Flat indices into one padded channel plane ``(Hp, Wp)`` of width ``plane_width``,
    shape ``(kh*kw*Ho*Wo,)``.

    Ordered ``(a, b, i, j)``: entry ``[a, b, i, j]`` is the position of
    ``plane[i*sh + a*dh, j*sw + b*dw]``. One channel's indices serve every channel (they
    stay in cache), and np.take wants them as intp.
    """
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel_size, stride, dilation, out_size
    rows = (np.arange(kh) * dh)[:, None, None, None] + (np.arange(ho) * sh)[:, None]
    cols = (np.arange(kw) * dw)[None, :, None, None] + np.arange(wo) * sw
    idx = rows * plane_width + cols
    idx.setflags(write=False)
    return idx.reshape(-1)
