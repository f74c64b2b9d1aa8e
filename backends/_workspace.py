"""The temporary memory the built-in backends allocate, for ``ConvBackend.workspace_bytes``.

Estimates err on the high side: the core refuses a call whose result plus workspace exceeds
the available memory, and a refusal is cheaper than swapping.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

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


#: Entries a :func:`remembered` method keeps before it starts afresh.
_REMEMBERED_MOST = 512

_WorkspaceBytes = Callable[[Any, ConvGeometry, str], int]


def remembered(context: Callable[[], Hashable]) -> Callable[[_WorkspaceBytes], _WorkspaceBytes]:
    """Decorate a backend's ``workspace_bytes(self, geom, method)`` whose figure depends on
    nothing but its arguments and ``context()`` (the thread count, say): it is worked out
    once per geometry, method and context. The core asks for it on every call, for the
    memory check: the winograd backend's took 10-28 us at batch 1, 14x14 x 256 channels,
    against a 1 ms layer."""

    def decorate(workspace_bytes: _WorkspaceBytes) -> _WorkspaceBytes:
        @functools.wraps(workspace_bytes)
        def remembering(self: Any, geom: ConvGeometry, method: str) -> int:
            known = self.__dict__.setdefault("_remembered_workspace", {})
            key = (geom, method, context())
            figure = known.get(key)  # one lookup: another thread may clear the dict
            if figure is None:
                if len(known) >= _REMEMBERED_MOST:
                    known.clear()
                figure = known[key] = workspace_bytes(self, geom, method)
            return figure

        return remembering

    return decorate
