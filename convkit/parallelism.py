"""One switch for the thread pools convolutions run on: BLAS/OpenMP, numba and torch.

numba's parallel kernels and a multi-threaded BLAS each size their pool to the machine; used
together they oversubscribe the cores (a matmul right after a numba kernel was measured 16x
slower here). :func:`threads` sets every pool for a block; ``CONVKIT_NUM_THREADS`` sets them
for the whole process.

Which pools. BLAS and OpenMP libraries loaded in the process (through threadpoolctl), numba's
(capped at ``numba.config.NUMBA_NUM_THREADS``, the pool it launched) and torch's, each only if
already imported: a block never imports numba or torch, and never launches numba's threading
layer early (the numba backend configures OpenMP before that happens). numba or torch
imported *inside* a block (the numba backend is loaded at its first call) are set at the next
convolution call in the block, with the libraries they load (numba brings an OpenMP runtime
and, at its first kernel, scipy's BLAS), and restored with the rest when the block ends.

Scope. numba's count is per thread, so a block sets it for the thread that runs the block;
the BLAS and torch pools are process-wide, so blocks in concurrent threads overwrite each
other's counts there. Blocks nest: the innermost one wins, and each restores what it found.

``CONVKIT_NUM_THREADS`` is applied at ``import convkit``: that is before numba, torch or an
OpenMP runtime is normally loaded, so their pools are sized from the start through
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``NUMBA_NUM_THREADS``
(set to the value, and inherited by child processes), and it holds for everything the process
runs, not only convolutions. The BLAS numpy has already loaded and pools already imported are
set directly. (At the first convolution call would be too late for whatever the program ran
before, and for numba and torch if the program imported them first.) Empty means unset; any
other value that is not a positive int raises ``ValueError`` at import.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import ModuleType

from convkit.geometry import positive_int

__all__ = ["threads"]

ENV_VAR = "CONVKIT_NUM_THREADS"
#: What ``CONVKIT_NUM_THREADS`` sets in the environment, for the pools loaded after it.
POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "NUMBA_NUM_THREADS")


class _Block:
    """The thread count of one :func:`threads` block, and how to undo what it set."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.undo: dict[str, Callable[[], None]] = {}
        self.modules = 0  # len(sys.modules) when the pools were last set

    def limit(self) -> None:
        """Set numba's and torch's counts (if loaded and not yet set by this block), then those
        of every BLAS/OpenMP library loaded now."""
        from threadpoolctl import threadpool_limits

        self.modules = len(sys.modules)
        for name in ("numba", "torch"):
            module = sys.modules.get(name)
            if module is None or name in self.undo:
                continue
            previous = module.get_num_threads()  # launches numba's threading layer (libgomp)
            _set_module_threads(module, self.n)
            self.undo[name] = lambda m=module, p=previous: m.set_num_threads(p)
        limits = threadpool_limits(limits=self.n)
        self.undo[f"libraries-{len(self.undo)}"] = limits.restore_original_limits

    def restore(self) -> None:
        for undo in reversed(self.undo.values()):
            undo()


_active: ContextVar[_Block | None] = ContextVar("convkit_threads", default=None)
_process_wide: int | None = None  # CONVKIT_NUM_THREADS, once applied


def threads(n: int) -> contextlib.AbstractContextManager[None]:
    """Run the block with ``n`` threads in BLAS/OpenMP (threadpoolctl), numba and torch.

    ``n`` is a positive int (checked here, not when the block starts); numba gets
    ``min(n, numba.config.NUMBA_NUM_THREADS)``. Pools are set only in libraries already
    loaded; numba and torch imported during the block are set at the block's next
    convolution call. Everything is restored when the block ends. numba's count is per
    thread; the others are process-wide.

    >>> import convkit
    >>> with convkit.threads(1):
    ...     pass  # convolutions here run on one thread
    """
    return _block(positive_int(n, "n (the number of threads)"))


@contextlib.contextmanager
def _block(n: int) -> Iterator[None]:
    block = _Block(n)
    token = _active.set(block)
    try:
        block.limit()
        yield
    finally:
        _active.reset(token)
        block.restore()


def thread_limit() -> int | None:
    """The thread count in force for code that sizes its own workers (the fft backend's
    transforms): the innermost :func:`threads` block's, else ``CONVKIT_NUM_THREADS`` as
    applied at import, else None (no limit was asked for)."""
    block = _active.get()
    return block.n if block is not None else _process_wide


def limit_pools_loaded_since_block_began() -> None:
    """Called before and after each backend call: if modules were imported since the innermost
    :func:`threads` block last looked (the numba backend is loaded at its first call; numba
    loads scipy's BLAS at its first kernel), set the pools they brought. Otherwise it costs a
    context variable lookup and a ``len(sys.modules)``."""
    block = _active.get()
    if block is not None and block.modules != len(sys.modules):
        block.limit()


def apply_environment() -> None:
    """Apply ``CONVKIT_NUM_THREADS`` to this process (see the module's documentation)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV_VAR} must be a positive int (or empty), got {value!r}")
    global _process_wide
    _process_wide = n
    for var in POOL_VARIABLES:
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)  # not as a context manager: the limits stay
    for name in ("numba", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            _set_module_threads(module, n)


def _set_module_threads(module: ModuleType, n: int) -> None:
    if module.__name__ == "numba":
        n = min(n, module.config.NUMBA_NUM_THREADS)
    module.set_num_threads(n)
