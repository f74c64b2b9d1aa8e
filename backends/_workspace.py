"""The temporary memory the built-in backends allocate, for ``ConvBackend.workspace_bytes``.

Estimates err on the high side: the core refuses a call whose result plus workspace exceeds
the available memory, and a refusal is cheaper than swapping.
"""

from __future__ import annotations

from convkit.geometry import ConvGeometry
from convkit_backends._common import images_per_chunk


def padded_bytes(geom: ConvGeometry, batch: int) -> int:
    """A zero-padded copy of ``batch`` images ``(batch, C, Hp, Wp)``."""
    hp, wp = geom.padded_size
    return batch * geom.in_channels * hp * wp * geom.dtype.itemsize


def column_count(geom: ConvGeometry) -> int:
    """Elements of one image's columns, ``C * kh * kw * Ho * Wo``."""
    (kh, kw), (ho, wo) = geom.kernel_size, geom.out_size
    return geom.in_channels * kh * kw * ho * wo


def im2col_bytes(geom: ConvGeometry, chunk_bytes: int) -> int:
    """The largest batch chunk's columns, padded input (or its gradient) and its crop, and
    GEMM result.

    Chunks hold as many images' columns as fit ``chunk_bytes`` (at least one), as in
    :func:`convkit_backends._common.batch_chunks`.
    """
    columns = column_count(geom) * geom.dtype.itemsize
    chunk = min(geom.batch, images_per_chunk(columns, chunk_bytes))
    gemm_result = geom.out_channels * geom.out_size[0] * geom.out_size[1] * geom.dtype.itemsize
    return chunk * (columns + 2 * padded_bytes(geom, 1) + gemm_result)
