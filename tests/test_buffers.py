"""The work buffers the fft and winograd backends keep between calls
(``convkit_backends._buffers``)."""

from __future__ import annotations

import numpy as np

from convkit_backends._buffers import Buffers


def test_kept_buffers_stay_within_their_limit() -> None:
    buffers = Buffers(limit=2**16)
    a = buffers.empty("a", (1000,), np.complex128)  # 16 kB, kept
    assert a.ctypes.data % 16 == 0 and buffers.kept_bytes() >= a.nbytes
    assert np.shares_memory(a, buffers.empty("a", (10,), np.complex128))
    big = buffers.empty("b", (2**14,), np.float64)  # 128 kB: over the limit, not kept
    assert big.shape == (2**14,) and not np.shares_memory(big, buffers.empty("b", (1,), float))
    assert buffers.kept_bytes() < 2**16
    buffers.release()
    assert buffers.kept_bytes() == 0


def test_kept_buffers_make_room_by_freeing_the_least_recently_used() -> None:
    buffers = Buffers(limit=2**16)
    a, b = (buffers.empty(name, (7000,), np.float32) for name in "ab")  # 28 kB each
    assert np.shares_memory(a, buffers.empty("a", (7000,), np.float32))  # a: used last now
    buffers.empty("c", (7000,), np.float32)  # no room for three: b goes
    assert buffers.kept_bytes() < 2**16
    assert np.shares_memory(a, buffers.empty("a", (7000,), np.float32))
    assert not np.shares_memory(b, buffers.empty("b", (7000,), np.float32))
