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

_controller: ThreadpoolController | None = None
_limiter = None  # threadpoolctl's limiter while any caller is inside
_lock = threading.Lock()
_users = 0


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread for the block.

    The limit is process-wide (BLAS has no per-thread setting): the first of overlapping
    blocks sets it and the last restores what was there, so that blocks in several threads
    cannot leave BLAS on one thread. Other BLAS users in the process run single-threaded
    meanwhile.
    """
    global _controller, _limiter, _users
    with _lock:
        if _controller is None:
            _controller = ThreadpoolController()
        if _users == 0:
            _limiter = _controller.limit(limits=1, user_api="blas")
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None
