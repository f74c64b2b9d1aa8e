"""How the numba backend sets numba up: quiet idle threads, and an on-disk kernel cache.

Idle threads. numba's ``omp`` threading layer (GNU libgomp here) lets its worker threads spin
for milliseconds after every parallel kernel. A BLAS call started in that window shares the
cores with spinning threads: a numpy matmul right after a numba convolution was measured 16x
slower on 2 cores. With ``OMP_WAIT_POLICY=PASSIVE`` the workers sleep when a kernel ends,
after spinning ``GOMP_SPINCOUNT=10000`` times (libgomp estimates 100000 spins per
millisecond: about 0.1 ms). That short spin spares back-to-back kernels the wake-up of
sleeping threads (the forward pass of a small 3-channel layer: 0.25-0.27 ms against
0.26-0.31 ms without it, four processes each), and a matmul right after a numba call was at
most 1.10x as slow as alone. libgomp reads both once, when it is loaded, i.e. when numba
launches its threading layer for the first parallel kernel, so they must be in the
environment before then. A process that imported PyTorch first already has its libgomp
initialised (spinning): there, set ``OMP_WAIT_POLICY=PASSIVE`` before
starting Python. The ``workqueue`` layer also sleeps when idle, but it aborts the process
when two Python threads launch kernels at once, and these kernels release the GIL.

Cache. ``cache=True`` makes numba keep compiled kernels on disk. By default numba writes
them into the package's own ``__pycache__``, which for an installed package is inside
site-packages: files pip does not know of, which outlive an uninstall and leave a stale
``convkit_backends`` directory that shadows a later editable install. So unless
``NUMBA_CACHE_DIR`` is set, :func:`use_user_cache_dir` points numba at convkit's user cache
directory (``platformdirs.user_cache_dir("convkit")/numba/<sources>``; numba keys its files
by the source file's path, so checkouts do not collide). numba checks only the file of the
kernel it loads, not the files of the kernels it calls: a kernel whose callee changed in
another file was loaded with the old callee compiled in. So ``<sources>`` is a digest of
every source file of ``convkit_backends``, and any change to them starts a fresh cache
(earlier folders stay until the user clears the cache; a ``NUMBA_CACHE_DIR`` of the user's
own gets no such folder).
Where that is not writable numba falls back to its own choices (the package's
``__pycache__``, then ``~/.cache/numba``); when none is writable it refuses to decorate the
function at all, and the kernels are compiled in every process instead.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import platformdirs

#: False once a kernel had to be compiled without the on-disk cache.
caching = True


def quiet_idle_threads() -> None:
    """Ask OpenMP worker threads to sleep, after a short spin, between kernels.

    Unless the user chose a wait policy: sets ``OMP_WAIT_POLICY=PASSIVE``, and
    ``GOMP_SPINCOUNT=10000`` unless that is set. Takes effect only if the OpenMP runtime was
    not loaded yet (numba loads it at the first parallel kernel).
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")


def use_user_cache_dir() -> None:
    """Keep compiled kernels in convkit's user cache directory, in a folder of their own per
    version of the sources (:func:`sources_digest`), unless the user chose a directory with
    ``NUMBA_CACHE_DIR`` (numba then already uses it)."""
    if not numba.config.CACHE_DIR:
        numba.config.CACHE_DIR = os.path.join(platformdirs.user_cache_dir("convkit"), "numba",
                                              sources_digest())


def sources_digest(root: Path | None = None) -> str:
    """12 hex digits of a SHA-1 over the path and content of every ``.py`` file under
    ``root`` (default: the ``convkit_backends`` package)."""
    root = root or Path(__file__).resolve().parents[1]
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


use_user_cache_dir()  # before any kernel module decorates its kernels


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
