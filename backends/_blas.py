"""BLAS on one thread while a backend runs its own threads of small GEMMs.

OpenBLAS decides per call whether to use its threads; GEMMs issued side by side from several
Python threads then queue for the same BLAS threads. Backends that share their GEMMs out
over threads of their own (``winograd``, ``fft``) run them inside :func:`one_blas_thread`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from threadpoolctl import ThreadpoolController

_libraries: list | None = None  # threadpoolctl's controllers of the BLAS libraries loaded
_restore: list = []  # (library, its thread count) while any caller is inside
_lock = threading.Lock()
_users = 0


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread for the block.

    The limit is process-wide (BLAS has no per-thread setting): the first of overlapping
    blocks sets it and the last restores what was there, so that blocks in several threads
    cannot leave BLAS on one thread. Other BLAS users in the process run single-threaded
    meanwhile. Each library's own get/set calls, not threadpoolctl's ``limit`` (7 us a block,
    gathering every library's details each time; a batch-1 layer takes about 1 ms).
    """
    global _libraries, _restore, _users
    with _lock:
        if _libraries is None:
            _libraries = [library for library in ThreadpoolController().lib_controllers
                          if library.user_api == "blas"]
        if _users == 0:
            _restore = [(library, library.num_threads) for library in _libraries]
            for library, threads in _restore:
                if threads != 1:
                    library.set_num_threads(1)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for library, threads in _restore:
                    if threads != 1:
                        library.set_num_threads(threads)
                _restore = []
