"""The winograd backend's worker threads and how a call's work is shared out among them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import numba
import numpy as np

Block = tuple[int, int]  # tile rows [row0, row1)
T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def workers_pool() -> ThreadPoolExecutor:
    """The worker threads, started at the first call (``NUMBA_NUM_THREADS`` of them)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS,
                                       thread_name_prefix="convkit-winograd")
        return _pool


def share_blocks(
    work: Callable[[Callable[[], Block | None]], None], blocks: Iterable[Block],
    pool: ThreadPoolExecutor, workers: int,
) -> None:
    """``work(take)`` on ``workers`` threads (this one and ``workers - 1`` of ``pool``), where
    ``take()`` hands out the next of ``blocks``, each once, and ``None`` when none is left."""
    pending = iter(blocks)
    lock = threading.Lock()

    def take() -> Block | None:
        with lock:
            return next(pending, None)

    futures = [pool.submit(work, take) for _ in range(workers - 1)]
    work(take)
    for future in futures:
        future.result()


def on_workers(step: Callable[[int], None], workers: int, pool: ThreadPoolExecutor) -> None:
    """``step(i)`` for every ``i < workers``: ``0`` on this thread, the others on ``pool``;
    returns when all have finished."""
    futures = [pool.submit(step, i) for i in range(1, workers)]
    try:
        step(0)
    finally:
        wait(futures)
    for future in futures:
        future.result()


def share(size: int, i: int, parts: int) -> range:
    """Part ``i`` of ``range(size)`` cut into ``parts`` runs of nearly equal length."""
    return range(size * i // parts, size * (i + 1) // parts)


def quiet(step: Callable[[T], None]) -> Callable[[T], None]:
    """``step`` with numpy's warnings about NaN, Inf and overflow off, in whichever thread it
    runs: the backend does not check operands before its GEMMs, it checks their result."""

    def quiet_step(arg: T) -> None:
        with np.errstate(invalid="ignore", over="ignore"):
            step(arg)

    return quiet_step
