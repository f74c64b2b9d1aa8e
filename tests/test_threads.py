"""Threads convolving at once, each in its own use_backend() block, all get correct results."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from conftest import BUILTIN_BACKENDS

import convkit
from convkit.testing import (
    CONFORMANCE_CASES,
    OPERATIONS,
    assert_within_bound,
    error_bound,
    run_operation,
)

ROUNDS = 3


def test_concurrent_threads_with_different_backends() -> None:
    cases = [c for c in CONFORMANCE_CASES if c.input_shape[0] > 1][:6]
    expected = {(c.name, op): run_operation(op, c.arrays(), c, "naive")
                for c in cases for op in OPERATIONS}
    names = [*BUILTIN_BACKENDS, *BUILTIN_BACKENDS]  # two threads per backend
    barrier = threading.Barrier(len(names))
    errors: list[str] = []
    seen: dict[int, set[str]] = {}

    def work(index: int, name: str) -> None:
        try:
            with convkit.use_backend(name):
                barrier.wait(timeout=60)  # all threads are inside their block before any runs
                for _ in range(ROUNDS):
                    for case in cases:
                        arrays = case.arrays()
                        for op in OPERATIONS:
                            seen.setdefault(index, set()).add(convkit.get_backend().name)
                            actual = run_operation(op, arrays, case)  # no backend= argument
                            assert_within_bound(actual, expected[case.name, op],
                                                error_bound(op, arrays, case),
                                                f"thread {index} {name} {op} {case}")
        except BaseException as exc:  # reported to the main thread below
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    # Each thread saw only its own backend: use_backend() does not leak across threads.
    assert seen == {i: {n} for i, n in enumerate(names)}
    assert convkit.get_backend().name == convkit.registry.DEFAULT_BACKEND


SCRIPT = """
import threading, numpy as np, convkit
x, w = np.ones((2, 3, 16, 16)), np.ones((4, 3, 3, 3))
barrier = threading.Barrier(4)
def work():
    with convkit.use_backend("numba"):
        barrier.wait()
        for _ in range(30):
            assert (convkit.conv2d(x, w, padding=1)[:, :, 1:-1, 1:-1] == 27).all()
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
import numba; print("layer", numba.threading_layer())
"""


def test_numba_threads_on_numbas_thread_unsafe_workqueue_layer() -> None:
    """Without OpenMP or TBB numba uses 'workqueue', where concurrent kernels abort the
    process; the numba backend serialises them there. Run in a child process, so a crash
    cannot take pytest down."""
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "layer workqueue"
