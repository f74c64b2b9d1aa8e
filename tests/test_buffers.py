"""The work buffers the fft and winograd backends keep between calls
(``convkit_backends._buffers``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import convkit
from convkit.backend import ConvBackend
from convkit.geometry import ConvGeometry
from convkit_backends._buffers import Buffers


def assert_later_calls_leave_results_alone(backend: ConvBackend, geom: ConvGeometry) -> None:
    """Two calls of each operation on new data: the first result must be unchanged by the
    second and share no memory with it (no result may be a kept buffer), and the backend
    must report what it keeps."""
    rng = np.random.default_rng(0)
    for method, shapes in [("forward", (geom.input_shape, geom.weight_shape)),
                           ("backward_input", (geom.output_shape, geom.weight_shape)),
                           ("backward_weight", (geom.input_shape, geom.output_shape))]:
        first = getattr(backend, method)(*(rng.standard_normal(s) for s in shapes), geom)
        kept = first.copy()
        second = getattr(backend, method)(*(rng.standard_normal(s) for s in shapes), geom)
        assert np.array_equal(first, kept), method
        assert not np.shares_memory(first, second)
    assert backend.retained_bytes() > 0


def test_kept_buffers_stay_within_their_limit() -> None:
    buffers = Buffers(limit=2**16)
    a = buffers.empty("a", (1000,), np.complex128)  # 16 kB, kept
    assert a.ctypes.data % 16 == 0 and buffers.kept_bytes() >= a.nbytes
    assert np.shares_memory(a, buffers.empty("a", (10,), np.complex128))
    big = buffers.empty("b", (2**14,), np.float64)  # 128 kB: over the limit, not kept
    assert big.shape == (2**14,) and not np.shares_memory(big, buffers.empty("b", (1,), float))
    assert buffers.kept_bytes() < 2**16
    buffers.release()
    assert buffers.kept_bytes() == 0


def test_kept_buffers_make_room_by_freeing_the_least_recently_used() -> None:
    buffers = Buffers(limit=2**16)
    a, b = (buffers.empty(name, (7000,), np.float32) for name in "ab")  # 28 kB each
    assert np.shares_memory(a, buffers.empty("a", (7000,), np.float32))  # a: used last now
    buffers.empty("c", (7000,), np.float32)  # no room for three: b goes
    assert buffers.kept_bytes() < 2**16
    assert np.shares_memory(a, buffers.empty("a", (7000,), np.float32))
    assert not np.shares_memory(b, buffers.empty("b", (7000,), np.float32))


def test_release_lets_go_of_every_threads_buffers() -> None:
    buffers = Buffers(limit=2**20)
    here = buffers.empty("a", (1000,), np.float64)
    kept, done = threading.Event(), threading.Event()

    def other_thread() -> None:  # keeps a buffer, and lives until the checks are done
        buffers.empty("a", (1000,), np.float64)
        kept.set()
        done.wait()

    worker = threading.Thread(target=other_thread, daemon=True)
    worker.start()
    try:
        kept.wait()
        assert buffers.kept_bytes() >= 2 * here.nbytes
        buffers.release()
        assert buffers.kept_bytes() == 0
    finally:
        done.set()
        worker.join()
    assert not np.shares_memory(here, buffers.empty("a", (1000,), np.float64))


@pytest.mark.parametrize("name, x_shape, w_shape, padding", [
    ("fft", (2, 8, 30, 30), (8, 8, 9, 9), 4),
    ("winograd", (2, 16, 12, 12), (16, 16, 3, 3), 1),
])
def test_backends_release_what_they_retain(name: str, x_shape, w_shape, padding: int) -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    convkit.conv2d(x, w, padding=padding, backend=name)
    backend = convkit.get_backend(name)
    assert backend.retained_bytes() > 0
    backend.release_retained()
    assert backend.retained_bytes() == 0
    convkit.conv2d(x, w, padding=padding, backend=name)  # works, and keeps again
    assert backend.retained_bytes() > 0
    with convkit.precision("fast"):
        convkit.get_backend("auto").release_retained()
    assert backend.retained_bytes() == 0
