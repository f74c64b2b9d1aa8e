"""Calls that cannot fit in memory fail fast with MemoryBudgetError, before allocating."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import convkit
import convkit.memory
from convkit.memory import CHECK_ABOVE, available_memory, format_bytes
from convkit_backends.naive import NaiveBackend

MiB = 2**20
METHODS = ["forward", "backward_input", "backward_weight"]


def test_huge_output_is_refused_by_every_backend(backend: str) -> None:
    """Padding 10**6 on a 1x1 image: a 14.6 TiB result, refused at once (no allocation)."""
    x = w = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(convkit.MemoryBudgetError) as err:
        convkit.conv2d(x, w, padding=10**6, backend=backend)
    message = str(err.value)
    assert "(result 14.6 TiB" in message
    assert f"backend {backend!r}" in message and "available" in message
    assert isinstance(err.value, MemoryError)


def test_huge_gradients_are_refused(backend: str) -> None:
    side = 10**6
    w = np.ones((1, 1, 1, 1))
    # Zero-stride views: the caller's arrays cost nothing, but making them contiguous would.
    gy = np.broadcast_to(0.0, (1, 1, side, side))
    with pytest.raises(convkit.MemoryBudgetError, match=r"backward_input.*result 7\.3 TiB"):
        convkit.conv2d_input_grad((1, 1, side, side), w, gy, backend=backend)
    x = np.broadcast_to(0.0, (1, 1, side, side))
    with pytest.raises(convkit.MemoryBudgetError, match=r"contiguous copies 14\.6 TiB"):
        convkit.conv2d_weight_grad(x, w.shape, gy, backend=backend)


@pytest.fixture
def memory_80mib(monkeypatch: pytest.MonkeyPatch) -> int:
    available = 80 * MiB
    monkeypatch.setattr(convkit.memory, "available_memory", lambda: available)
    return available


@pytest.mark.parametrize("name", ["im2col-strided", "im2col-take"])
@pytest.mark.parametrize("method", METHODS)
def test_im2col_columns_count_as_workspace(memory_80mib: int, name: str, method: str) -> None:
    """One image's columns are 98 MiB (16 channels x 7x7 taps x 128x128 x 8 bytes)."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 16, 128, 128)), rng.standard_normal((16, 16, 7, 7))
    gy = rng.standard_normal((1, 16, 128, 128))
    calls = {
        "forward": lambda b: convkit.conv2d(x, w, padding=3, backend=b),
        "backward_input": lambda b: convkit.conv2d_input_grad(x.shape, w, gy, padding=3,
                                                              backend=b),
        "backward_weight": lambda b: convkit.conv2d_weight_grad(x, w.shape, gy, padding=3,
                                                                backend=b),
    }
    backend = convkit.get_backend(name)
    geom = convkit.make_geometry(x.shape, w.shape, padding=3)
    workspace = backend.workspace_bytes(geom, method)
    assert workspace > 98 * MiB
    with pytest.raises(convkit.MemoryBudgetError) as err:
        calls[method](name)
    assert f"workspace {format_bytes(workspace)}" in str(err.value)
    assert "80.0 MiB of memory is available" in str(err.value)
    assert calls[method]("numba").shape  # a few MiB of padded copies: not even checked


def test_declared_workspace_is_checked_before_the_backend_runs(memory_80mib: int) -> None:
    class Greedy(NaiveBackend):
        def workspace_bytes(self, geom, method):
            return 10 * 2**30

        def forward(self, x, weight, geom):
            raise AssertionError("must not be called")

    convkit.register_backend("greedy", Greedy)
    with pytest.raises(convkit.MemoryBudgetError, match=r"'greedy'.*workspace 10\.0 GiB"):
        convkit.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), backend="greedy")


def test_small_calls_are_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable() -> int:
        raise AssertionError("a call below CHECK_ABOVE must not read /proc")

    monkeypatch.setattr(convkit.memory, "available_memory", unreachable)
    y = convkit.conv2d(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)), backend="im2col-strided")
    assert y.nbytes < CHECK_ABOVE


def test_available_memory_is_plausible() -> None:
    available = available_memory()
    assert available is not None  # Linux: /proc/meminfo
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))
    assert 0 < available <= total


def test_cgroup_limit_lowers_the_available_memory(tmp_path, monkeypatch) -> None:
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(f"{512 * MiB}\n")
    usage.write_text(f"{500 * MiB}\n")
    monkeypatch.setattr(convkit.memory, "_CGROUP_LIMITS", ((str(limit), str(usage)),))
    assert available_memory() == 12 * MiB
    limit.write_text("max\n")
    assert available_memory() > 12 * MiB


@pytest.mark.parametrize("size, text", [(0, "0.0 B"), (1536, "1.5 KiB"), (3 * 2**30, "3.0 GiB"),
                                        (2**70, "1024.0 EiB")])
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


def traced_workspace(backend, method: str, args, geom, warm_with=None) -> int:
    """Bytes ``backend.method(*args, geom)`` allocates besides its result, seen by tracemalloc
    (numpy and numba's runtime report to it), on a second call: the first compiles numba's
    kernels and fills caches (im2col-take's indices, fft's tiling plan). ``warm_with``: make
    that first call on this other instance instead (for a backend that keeps buffers between
    calls, whose second call would allocate nothing)."""
    compute = getattr(backend, method)
    getattr(warm_with or backend, method)(*args, geom)
    tracemalloc.start()
    try:
        out = compute(*args, geom)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - out.nbytes


def _assert_peak_within_workspace(backend, method: str, args, geom) -> None:
    """tracemalloc: peak minus the result <= ``workspace_bytes + 1 MiB``."""
    used, declared = traced_workspace(backend, method, args, geom), backend.workspace_bytes(
        geom, method)
    assert used <= declared + MiB, (used, declared)


GEOMETRIES = [((1, 16, 64, 64), (16, 16, 7, 7), 3, 1), ((6, 32, 24, 24), (64, 32, 3, 3), 1, 1),
              ((4, 8, 20, 20), (8, 1, 5, 5), 2, 8)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "name, x_shape, w_shape, padding, groups",
    [(name, *g) for name in ("im2col-strided", "im2col-take") for g in GEOMETRIES]
    + [("naive", *GEOMETRIES[0])]  # the naive backend is too slow for the others
    + [("winograd", *GEOMETRIES[1])],  # 3x3 only
)
def test_declared_workspace_bounds_the_measured_peak(
    name: str, method: str, x_shape, w_shape, padding: int, groups: int
) -> None:
    rng = np.random.default_rng(0)
    geom = convkit.make_geometry(x_shape, w_shape, padding=padding, groups=groups)
    x, w, gy = (rng.standard_normal(s) for s in (x_shape, w_shape, geom.output_shape))
    args = {"forward": (x, w), "backward_input": (gy, w), "backward_weight": (x, gy)}[method]
    _assert_peak_within_workspace(convkit.get_backend(name), method, args, geom)


@pytest.mark.parametrize("method", ["forward", "backward_input"])
def test_winograd_workspace_counts_the_exact_path_after_a_non_finite_result(
    method: str
) -> None:
    """A NaN makes the Winograd result non-finite, and the call runs again on the exact
    path, with the Winograd path's buffers still kept: both count."""
    rng = np.random.default_rng(0)
    geom = convkit.make_geometry((8, 64, 28, 28), (64, 64, 3, 3), padding=1, dtype="float32")
    x, w, gy = (rng.standard_normal(s).astype("float32")
                for s in (geom.input_shape, geom.weight_shape, geom.output_shape))
    operand = x if method == "forward" else gy
    operand[0, 3, 5, 7] = np.nan
    args = (operand, w)
    from convkit_backends.winograd import WinogradBackend

    backend = WinogradBackend()  # fresh: no buffers kept yet
    used = traced_workspace(backend, method, args, geom, warm_with=WinogradBackend())
    assert used <= backend.workspace_bytes(geom, method) + MiB


def test_remembered_workspace_follows_the_thread_count() -> None:
    """The winograd and numba backends remember their workspace per geometry, method and
    thread count, and a remembered figure is the one worked out afresh."""
    import numba

    from convkit_backends.numba_direct.backend import NumbaBackend
    from convkit_backends.winograd import WinogradBackend

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two numba threads")
    geom = convkit.make_geometry((1, 64, 28, 28), (64, 64, 3, 3), padding=1, dtype="float32")
    for backend in (WinogradBackend(), NumbaBackend()):
        fresh = type(backend).workspace_bytes.__wrapped__
        figures = {}
        for threads in (1, 2, 1):
            with convkit.threads(threads):
                figures[threads] = backend.workspace_bytes(geom, "forward")
                assert figures[threads] == fresh(backend, geom, "forward")
        assert figures[1] != figures[2]


# --- numba: the workspace of every kernel family ------------------------------------------

# One case per kernel family of the numba backend (convkit_backends.numba_direct.choice),
# and per path within one ("family:path"), (input, weight, stride, padding, dilation), each
# large enough that the family's padded copies or per-thread scratch stand out above the
# 1 MiB tolerance.
NUMBA_FAMILY_CASES = {
    "three_by_three": ((2, 32, 96, 96), (32, 32, 3, 3), 1, 1, 1),
    "wide": ((2, 32, 96, 96), (32, 32, 5, 5), 1, 2, 1),
    "wide:dilated": ((2, 32, 96, 96), (32, 32, 5, 5), 1, 4, 2),  # the flat forward kernel
    "wide:narrow-rows": ((2, 64, 400, 6), (64, 64, 5, 3), 1, 0, 1),  # widened: 4 columns
    "stride_two": ((2, 64, 96, 96), (64, 64, 3, 3), 2, 1, 1),
    "phases": ((2, 32, 96, 96), (32, 32, 5, 5), 2, 2, 1),
    "general": ((2, 32, 96, 96), (32, 32, 3, 3), 2, 2, 2),
}
def _numba_case(family: str, dtype: str, method: str, nonfinite: bool = False):
    """The geometry and the arguments of ``method`` for ``NUMBA_FAMILY_CASES[family]``; with
    ``nonfinite``, a NaN in each operand (the gradients then move down the choice's table,
    and the general kernels repair the padding's NaN)."""
    x_shape, w_shape, stride, padding, dilation = NUMBA_FAMILY_CASES[family]
    geom = convkit.make_geometry(x_shape, w_shape, stride=stride, padding=padding,
                                 dilation=dilation, dtype=dtype)
    rng = np.random.default_rng(0)
    x, w, gy = (rng.standard_normal(s).astype(dtype)
                for s in (x_shape, w_shape, geom.output_shape))
    if nonfinite:
        for a in (x, w, gy):
            a[0, 1, 0, 1] = np.nan
    args = {"forward": (x, w), "backward_input": (gy, w), "backward_weight": (x, gy)}[method]
    return geom, args


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("family", NUMBA_FAMILY_CASES)
@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nan"])
def test_numba_workspace_bounds_the_measured_peak(
    family: str, nonfinite: bool, dtype: str, method: str
) -> None:
    from convkit_backends.numba_direct.backend import NumbaBackend
    from convkit_backends.numba_direct.choice import choose_kernel

    geom, args = _numba_case(family, dtype, method, nonfinite)
    assert choose_kernel(method, geom, lambda: True).value == family.split(":")[0]
    _assert_peak_within_workspace(NumbaBackend(), method, args, geom)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_strided_vector_rows_workspace_bounds_the_measured_peak(dtype: str) -> None:
    """The forward pass of a strided layer of few channels copies each image's planes split
    by column phase, per thread (2.6 MB per thread here)."""
    from convkit_backends.numba_direct.backend import NumbaBackend
    from convkit_backends.numba_direct.choice import choose_kernel

    geom = convkit.make_geometry((2, 4, 400, 400), (8, 4, 7, 7), stride=2, padding=3,
                                 dtype=dtype)
    rng = np.random.default_rng(0)
    x, w = (rng.standard_normal(s).astype(dtype) for s in (geom.input_shape, geom.weight_shape))
    assert choose_kernel("forward", geom, lambda: True).value == "vector_rows"
    _assert_peak_within_workspace(NumbaBackend(), "forward", (x, w), geom)


@pytest.mark.parametrize("family", ["three_by_three", "wide", "stride_two", "phases"])
def test_numba_workspace_check_fails_without_a_declared_workspace(family: str) -> None:
    """The check above sees the padded copies and the scratch that numba allocates."""
    from convkit_backends.numba_direct.backend import NumbaBackend

    class Undeclared(NumbaBackend):
        def workspace_bytes(self, geom, method):
            return 0

    geom, args = _numba_case(family, "float64", "forward")
    with pytest.raises(AssertionError):
        _assert_peak_within_workspace(Undeclared(), "forward", args, geom)
