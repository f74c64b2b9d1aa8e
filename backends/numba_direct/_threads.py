"""Parallel numba kernels called from several threads at once, without crashing.

numba runs ``parallel=True`` kernels on a threading layer: ``tbb`` or ``omp`` when available,
else ``workqueue``, which is not thread-safe. Two threads launching kernels at once on it
abort the whole process ("Concurrent access has been detected"). So backend calls are
serialised by a lock unless the layer in use is known to be thread-safe.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

import numba

_THREADSAFE_LAYERS = ("tbb", "omp")
# Re-entrant: a backend method may call another (strided layers recurse over phases).
_launch_lock = threading.RLock()

Method = TypeVar("Method", bound=Callable)


def _layer_is_threadsafe() -> bool:
    try:
        return numba.threading_layer() in _THREADSAFE_LAYERS
    except ValueError:  # no parallel kernel has run yet: the first launch picks the layer
        return False


def serialised_on_unsafe_layer(method: Method) -> Method:
    """Decorate a backend method that launches parallel kernels: it holds a process-wide lock
    while numba's threading layer is not known to be thread-safe."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if _layer_is_threadsafe():
            return method(*args, **kwargs)
        with _launch_lock:
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
