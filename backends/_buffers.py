"""Work buffers a backend keeps between calls, so that repeated calls do not page-fault.

A call of the fft or winograd backend fills several arrays of megabytes (tiles, spectra,
transformed filters, GEMM results). Fresh ones are fresh pages: the operating system maps and
zeroes each on its first touch. On the 8x64x28x28 11x11 fft forward pass that was about 3300
page faults and 10 of 26 ms per call (in process, fresh inputs per call; 16 ms when the
allocator kept its pages). So such a backend instance keeps its buffers, per thread, up to a
limit, and hands out views of them (``retained_bytes`` reports them).

A buffer is only ever used inside one call of the thread that owns it; results returned to
the caller are always fresh arrays.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np


class _Kept:
    """One thread's buffers by name (an object a weak set can hold)."""

    __slots__ = ("__weakref__", "arrays")

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}


class Buffers:
    """Named scratch arrays, kept per thread up to ``limit`` bytes per thread.

    ``empty(name, shape, dtype)`` returns an uninitialised array viewing the buffer ``name``
    (grown when too small). Two arrays in use at once need two names; names are roles
    (``'spectrum'``, ``'rows'``), shared by the operations, so that one layer's forward pass
    and gradients reuse the same buffers. A request that would take the thread's kept bytes
    over ``limit`` first frees the buffers used least recently; one larger than ``limit``
    gets a fresh array, which is not kept. A thread's buffers are freed when the thread ends
    or :meth:`release` is called in it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._local = threading.local()
        self._every_thread: weakref.WeakSet[_Kept] = weakref.WeakSet()
        self._lock = threading.Lock()

    def empty(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised ``shape`` array of ``dtype``, valid until ``name`` is asked for
        again in this thread."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        kept = self._thread_buffers().arrays
        buffer = kept.pop(name, None)  # and put back last: the dict is in order of use
        if buffer is None or buffer.nbytes < nbytes:
            if nbytes + _SPARE > self.limit:
                return np.empty(shape, dtype)
            while kept and sum(map(_held, kept.values())) + nbytes + _SPARE > self.limit:
                del kept[next(iter(kept))]  # the least recently used
            buffer = _aligned_bytes(nbytes)
        kept[name] = buffer
        return buffer[:nbytes].view(dtype).reshape(shape)

    def zeros(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """:meth:`empty`, filled with zeros."""
        out = self.empty(name, shape, dtype)
        out.fill(0)
        return out

    def kept_bytes(self) -> int:
        """Bytes the buffers of every thread hold now."""
        with self._lock:
            every = list(self._every_thread)
        return sum(_held(b) for kept in every for b in list(kept.arrays.values()))

    def release(self) -> None:
        """Stop keeping every thread's buffers (an array a running call still uses lives
        until that call drops it)."""
        with self._lock:
            every = list(self._every_thread)
        for kept in every:
            kept.arrays.clear()

    def _thread_buffers(self) -> _Kept:
        kept = getattr(self._local, "kept", None)
        if kept is None:
            kept = self._local.kept = _Kept()
            with self._lock:
                self._every_thread.add(kept)
        return kept


#: Bytes a kept buffer's array has beyond its aligned view (:func:`_aligned_bytes`).
_SPARE = 16


def _held(buffer: np.ndarray) -> int:
    """The bytes a kept buffer holds: its view and the spare bytes before or after it."""
    return buffer.nbytes + _SPARE


def _aligned_bytes(nbytes: int) -> np.ndarray:
    """``nbytes`` bytes starting at a multiple of 16 (complex128's alignment), a view of a
    fresh array ``_SPARE`` (16) bytes longer. Kept as the view: working the offset out on
    every request (``ndarray.ctypes``) doubled what a request costs (the seven of a batch-1
    winograd layer: 16.8 against 8.1 us)."""
    raw = np.empty(nbytes + _SPARE, np.uint8)
    start = -raw.__array_interface__["data"][0] % 16
    return raw[start:start + nbytes]
