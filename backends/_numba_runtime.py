"""How the numba backend sets numba up: quiet idle threads, and an on-disk kernel cache.

Idle threads. numba's ``omp`` threading layer (GNU libgomp here) lets its worker threads spin
for milliseconds after every parallel kernel. A BLAS call started in that window shares the
cores with spinning threads: a numpy matmul right after a numba convolution was measured 16x
slower on 2 cores. With ``OMP_WAIT_POLICY=PASSIVE`` the workers sleep as soon as a kernel
ends; waking them for the next kernel costs microseconds. libgomp reads the policy once, when
it is loaded, i.e. when numba launches its threading layer for the first parallel kernel, so
it must be in the environment before then. A process that imported PyTorch first already
has its libgomp initialised (spinning): there, set ``OMP_WAIT_POLICY=PASSIVE`` before
starting Python. The ``workqueue`` layer also sleeps when idle, but it aborts the process
when two Python threads launch kernels at once, and these kernels release the GIL.

Cache. ``cache=True`` makes numba keep compiled kernels on disk: in the package's
``__pycache__``, or, when that is read-only (a system-wide install), in the user's cache
directory (``~/.cache/numba``). When neither is writable numba refuses to decorate the
function at all; then the kernels are compiled in every process instead.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import numba

#: False once a kernel had to be compiled without the on-disk cache.
caching = True


def quiet_idle_threads() -> None:
    """Ask OpenMP worker threads to sleep, not spin, between kernels.

    Sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy. Takes effect only if the
    OpenMP runtime was not loaded yet (numba loads it at the first parallel kernel).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def jit(**options: Any) -> Callable[[Callable], Callable]:
    """``numba.njit(cache=True, **options)``, or without the cache if no cache dir is writable."""

    def decorate(func: Callable) -> Callable:
        global caching
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
            if caching:
                warnings.warn(
                    f"numba kernels are compiled in every process (no writable cache: {exc})",
                    RuntimeWarning,
                    stacklevel=2,
                )
            caching = False
            return numba.njit(**options)(func)

    return decorate
