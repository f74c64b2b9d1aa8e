"""The fft backend's own threads: numpy's GEMMs and copies release the GIL, so pieces of one
call (the spectral product's column frequencies, the tile copies) run side by side on the
cores. GEMMs shared out this way run with BLAS on one thread (:func:`share_out`)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from convkit_backends._blas import one_blas_thread

Part = TypeVar("Part")


def run_parts(work: Callable[[Part], None], parts: Sequence[Part]) -> None:
    """``work(part)`` for every part: the first in this thread, the others in a pool."""
    if len(parts) == 1:
        work(parts[0])
        return
    pending = [_pool(len(parts) - 1).submit(work, part) for part in parts[1:]]
    work(parts[0])
    for future in pending:
        future.result()


def share_out(work: Callable[[range], None], count: int, workers: int) -> None:
    """``work(items)`` over ``range(count)`` dealt out to up to ``workers`` threads (thread
    ``t`` takes ``t, t + threads, ...``), with BLAS on one thread meanwhile: the GEMMs in
    ``work`` are each thread's own, too small for BLAS's threads."""
    threads = max(1, min(workers, count))
    with one_blas_thread():
        run_parts(work, [range(t, count, threads) for t in range(threads)])


@functools.lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="convkit-fft")


def copy_in_parts(dst: np.ndarray, src: np.ndarray, parts: int) -> None:
    """``np.copyto(dst, src)`` in ``parts`` slices along the first axis, side by side (numpy
    releases the GIL for the copy)."""
    bounds = [dst.shape[0] * i // parts for i in range(parts + 1)]
    slices = [slice(lo, hi) for lo, hi in itertools.pairwise(bounds) if lo < hi]
    if slices:  # nothing to copy from an empty array
        run_parts(lambda part: np.copyto(dst[part], src[part]), slices)
