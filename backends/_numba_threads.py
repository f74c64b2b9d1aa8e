"""Parallel numba kernels called from several threads at once, without crashing.

numba runs ``parallel=True`` kernels on a threading layer: ``tbb`` or ``omp`` when available,
else ``workqueue``, which is not thread-safe. Two threads launching kernels at once on it
abort the whole process ("Concurrent access has been detected"). So launches are serialised
by a lock unless the layer in use is known to be thread-safe.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numba

_THREADSAFE_LAYERS = ("tbb", "omp")
_launch_lock = threading.Lock()


def _layer_is_threadsafe() -> bool:
    try:
        return numba.threading_layer() in _THREADSAFE_LAYERS
    except ValueError:  # no parallel kernel has run yet: the first launch picks the layer
        return False


@contextlib.contextmanager
def parallel_launch() -> Iterator[None]:
    """Wrap each parallel kernel call: holds a process-wide lock on a thread-unsafe layer."""
    if _layer_is_threadsafe():
        yield
        return
    with _launch_lock:
        yield
