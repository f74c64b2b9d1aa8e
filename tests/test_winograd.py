"""The winograd backend: transforms, its declared accuracy on 3x3 stride-1 cases, its
exact fallbacks and what it refuses."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from test_buffers import assert_later_calls_leave_results_alone

import convkit
from convkit.precision import allows
from convkit.testing import (
    CHECK_KINDS,
    CONFORMANCE_CASES,
    DTYPES,
    NONFINITE_SCENARIOS,
    OPERATIONS,
    WINOGRAD_CASES,
    ConformanceCheck,
    ConvCase,
    assert_same_nonfinite,
    assert_within_bound,
    check_backend,
    error_bound,
    poisoned,
    run_operation,
)
from convkit_backends import winograd
from convkit_backends.numba_direct.backend import NumbaBackend
from convkit_backends.winograd import F2, F4, VARIANTS, WinogradBackend
from convkit_backends.winograd.transforms import (
    filter_matrix,
    filters_at,
    transform_filters,
)

TILES = sorted(VARIANTS)


@pytest.fixture
def variants() -> None:
    """Backends forcing each variant: ``winograd-f2`` and ``winograd-f4``."""
    for tile in TILES:
        convkit.register_backend(f"winograd-f{tile}", WinogradBackend(tile))


@pytest.mark.parametrize("variant", [F2, F4], ids=["F2", "F4"])
def test_transforms_compute_a_correlation(variant: winograd.Variant) -> None:
    """``Aᵀ [(G g) ⊙ (Bᵀ d)] = [sum_k d[i + k] g[k] for i < m]``, exactly up to rounding."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal(variant.a), rng.standard_normal(3)
    expected = [d[i:i + 3] @ g for i in range(variant.m)]
    np.testing.assert_allclose(variant.at @ ((variant.g @ g) * (variant.bt @ d)), expected,
                               rtol=1e-13, atol=1e-13)


def filter_transform(w: np.ndarray, variant: winograd.Variant) -> np.ndarray:
    """``U: (a*a, K, C)`` of ``w: (K, C, 3, 3)``: :func:`transform_filters` over every output
    channel, on this thread."""
    k, c = w.shape[:2]
    u = np.empty((variant.a**2, k, c), w.dtype)
    transform_filters(w, filter_matrix(variant, w.dtype), u, 0, k, np.empty((9, c), w.dtype))
    return u


@pytest.mark.parametrize("variant", [F2, F4], ids=["F2", "F4"])
def test_filter_transform_is_g_g_gt(variant: winograd.Variant) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    a = variant.a
    u = filter_transform(w, variant)
    assert u.dtype == np.float32 and u.shape == (a * a, 5, 3)
    expected = np.einsum("si,kcij,qj->sqkc", variant.g, w.astype(np.float64), variant.g)
    scale = np.abs(expected).max()  # computed in float32: entries that cancel are off by eps
    np.testing.assert_allclose(u, expected.reshape(a * a, 5, 3), rtol=1e-6, atol=1e-6 * scale)


def test_transform_filters_writes_only_its_output_channels() -> None:
    """A worker's share, from a non-contiguous weight (a flipped view, as a caller may pass
    one): channels ``[1, 3)`` are ``G g Gᵀ``, the rest left alone."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 6, 3, 3))[:, :, ::-1, ::-1]
    u = np.full((36, 4, 6), 7.0)
    transform_filters(w, filter_matrix(F4, w.dtype), u, 1, 3, np.empty((9, 6)))
    expected = np.einsum("si,kcij,qj->sqkc", F4.g, w, F4.g).reshape(36, 4, 6)
    np.testing.assert_allclose(u[:, 1:3], expected[:, 1:3], rtol=1e-13, atol=1e-13)
    assert (u[:, [0, 3]] == 7.0).all()


@pytest.mark.parametrize("variant", [F2, F4], ids=["F2", "F4"])
def test_filters_at_one_position_are_that_position_of_u(variant: winograd.Variant) -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 5, 3, 3))
    by_tap = np.ascontiguousarray(w.transpose(2, 3, 0, 1)).reshape(9, 4, 5)
    u = filter_transform(w, variant)
    at_p = np.full((4, 5), 7.0)
    for p in (0, variant.a + 1, variant.a**2 - 1):
        filters_at(by_tap, filter_matrix(variant, w.dtype), p, at_p)
        np.testing.assert_allclose(at_p, u[p], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", CHECK_KINDS)
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=str)
def test_winograd_cases_within_the_declared_bound(
    variants: None, case: ConvCase, kind: str, dtype: str, tile: int
) -> None:
    """Each variant against the naive float64 result, within ``error_factor`` x the bound;
    the adjoint identity; NaN/Inf where a direct sum puts them."""
    ConformanceCheck(case, kind, dtype).run(f"winograd-f{tile}")  # type: ignore[arg-type]


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("scenario", NONFINITE_SCENARIOS)
def test_every_nonfinite_scenario_lands_where_a_direct_sum_puts_it(
    variants: None, scenario: str, tile: int
) -> None:
    """The forward pass and input gradient check their result, not their operands: every
    scenario, on every case, must still give NaN and Inf where the naive backend does."""
    for case in WINOGRAD_CASES:
        bad = poisoned(case.arrays("float32"), scenario, seed=len(case.name))
        for op in OPERATIONS:
            assert_same_nonfinite(run_operation(op, bad, case, f"winograd-f{tile}"),
                                  run_operation(op, bad, case, "naive"),
                                  f"winograd-f{tile} {op} {case} ({scenario})")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=str)
def test_matches_torch(case: ConvCase, op: str, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    from test_conformance import _torch_operation

    arrays = case.arrays(dtype)
    actual = run_operation(op, arrays, case, "winograd")
    assert actual.dtype == np.dtype(dtype)
    expected = _torch_operation(torch, op, arrays, case)
    # PyTorch's own error counts once more: twice the declared factor.
    bound = 2 * WinogradBackend.capabilities.error_factor * error_bound(op, arrays, case)
    assert_within_bound(actual, expected, bound, f"winograd {op} {case}")


def test_conformance_suite_passes_what_it_declares() -> None:
    report = check_backend("winograd")
    assert report.ok, report.summary()
    total = len(CONFORMANCE_CASES) * len(CHECK_KINDS) * len(DTYPES)
    assert sum(report.passed.values()) + sum(report.skipped.values()) == total
    assert sum(report.passed.values()) > 0
    assert set(report.skip_reasons) == {"dilation", "groups", "kernel_size", "stride"}


@pytest.mark.parametrize(
    "params, reason",
    [({"stride": 2}, "stride"), ({"dilation": 2}, "dilation"), ({"groups": 2}, "groups"),
     ({"kernel": 5}, "kernel_size")],
)
def test_other_geometry_is_refused(params: dict, reason: str) -> None:
    kernel, groups = params.pop("kernel", 3), params.get("groups", 1)
    x, w = np.ones((1, 8, 12, 12)), np.ones((8, 8 // groups, kernel, kernel))
    with pytest.raises(convkit.UnsupportedConfigurationError, match=reason):
        convkit.conv2d(x, w, padding=2, backend="winograd", **params)


def test_declared_inexact_so_exact_policy_keeps_it_out() -> None:
    caps = convkit.get_backend("winograd").capabilities
    assert not caps.exact and caps.error_factor == 4.0
    with convkit.precision("exact"):
        assert not allows(caps.error_factor)
    with convkit.precision("fast"):
        assert allows(caps.error_factor)
    assert caps.kernel_sizes == frozenset({(3, 3)})


def _exact(x: np.ndarray, w: np.ndarray, **params) -> np.ndarray:
    return convkit.conv2d(x, w, backend="numba", **params)


def test_few_channels_and_non_finite_data_take_the_exact_path() -> None:
    rng = np.random.default_rng(0)
    few = rng.standard_normal((2, winograd.MIN_CHANNELS - 1, 9, 9))
    w = rng.standard_normal((8, few.shape[1], 3, 3))
    assert np.array_equal(convkit.conv2d(few, w, padding=1, backend="winograd"),
                          _exact(few, w, padding=1))
    x = rng.standard_normal((2, 8, 9, 9))
    x[0, 3, 4, 4] = np.inf
    w = rng.standard_normal((8, 8, 3, 3))
    np.testing.assert_array_equal(convkit.conv2d(x, w, padding=1, backend="winograd"),
                                  _exact(x, w, padding=1))


@pytest.mark.parametrize("method", ["forward", "backward_input"])
def test_an_overflow_in_the_transforms_takes_the_exact_path(method: str) -> None:
    """Finite operands whose transformed tiles overflow float32 while the direct sums do
    not: the result is the exact backend's, not Inf. Signs repeating ``+ + - -`` along both
    axes make F(4,3)'s ``4 d0 - 5 d2 + d4`` add up to 10 times a value per axis."""
    rng = np.random.default_rng(0)
    signs = np.array([1, 1, -1, -1] * 4, np.float32)
    big = rng.uniform(1e37, 3e37, (1, 8, 16, 16)).astype(np.float32) * np.outer(signs, signs)
    w = rng.uniform(-1e-3, 1e-3, (8, 8, 3, 3)).astype(np.float32)
    geom = convkit.make_geometry(big.shape, w.shape, padding=1, dtype=np.float32)
    backend = WinogradBackend(4)
    expected = getattr(NumbaBackend(), method)(big, w, geom)
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(getattr(backend, method)(big, w, geom), expected)


def test_outputs_in_the_padding_alone_are_exactly_zero() -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 8, 6, 6)), rng.standard_normal((8, 8, 3, 3))
    y = convkit.conv2d(x, w, padding=4, backend="winograd")  # windows 0-1 and 10-11 empty
    assert not y[:, :, :2].any() and not y[:, :, -2:].any()
    assert not y[..., :2].any() and not y[..., -2:].any()
    assert y[:, :, 2:-2, 2:-2].all()


@pytest.mark.parametrize("batch, out_size, tile",
                         [(1, (56, 56), 4), (8, (14, 14), 4), (1, (14, 14), 2), (4, (2, 2), 2),
                          (8, (7, 7), 2)])
def test_the_cheaper_variant_is_chosen(batch: int, out_size: tuple[int, int], tile: int) -> None:
    geom = convkit.make_geometry((batch, 8, *out_size), (8, 8, 3, 3), padding=1)
    assert winograd.choose_variant(geom).m == tile
    assert WinogradBackend(2).variant(geom).m == 2


@pytest.mark.parametrize("batch, out_size, tile",
                         [(8, (14, 14), 2), (8, (28, 28), 4), (1, (56, 56), 4), (8, (7, 7), 2)])
def test_the_weight_gradient_counts_a_sum_per_worker(batch: int, out_size: tuple[int, int],
                                                    tile: int) -> None:
    """Two workers' sums over tiles cost twice the forward pass's ``U``: 8x14x14 takes F(2,3)
    for the weight gradient, F(4,3) forward."""
    geom = convkit.make_geometry((batch, 8, *out_size), (8, 8, 3, 3), padding=1)
    assert winograd.choose_variant(geom, sums=2).m == tile


def test_bad_tile_is_refused() -> None:
    with pytest.raises(ValueError, match="tile must be one of"):
        WinogradBackend(6)


def test_blocks_cover_every_tile_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blocks (one tile row each, the last one shorter) give the same result."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 16, 11, 13)), rng.standard_normal((8, 16, 3, 3))
    whole = convkit.conv2d(x, w, padding=1, backend="winograd")
    monkeypatch.setattr(winograd, "BLOCK_BYTES", 1)
    np.testing.assert_allclose(convkit.conv2d(x, w, padding=1, backend="winograd"), whole,
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(whole, _exact(x, w, padding=1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("one_block", [True, False], ids=["shared-block", "blocks"])
def test_a_later_call_leaves_earlier_results_alone(
    one_block: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend keeps its transformed filters and blocks from call to call: no result may
    be one of them, and ``retained_bytes`` counts them."""
    if one_block and numba.get_num_threads() < 2:
        pytest.skip("one shared block needs two or more worker threads")
    if not one_block:
        monkeypatch.setattr(winograd, "MIN_BLOCK_TILES", 1)
        monkeypatch.setattr(winograd, "BLOCK_BYTES", 1)
    geom = convkit.make_geometry((2, 16, 12, 12), (16, 16, 3, 3), padding=1)
    backend = WinogradBackend()
    assert (winograd._Plan.make(geom, backend.variant(geom)).workers() == 1) == one_block
    assert_later_calls_leave_results_alone(backend, geom)


@pytest.mark.parametrize("block_rows", [1, 2, 5, 100], ids=lambda r: f"{r}-tile-rows")
def test_weight_gradient_sums_every_block(block_rows: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of one to all tile rows (2 and 5 straddle images: 3 tile rows per image in
    F(4,3), 6 in F(2,3)), an odd size (cropped tiles) and padding on the rows only give the
    exact weight gradient."""
    make = winograd._Plan.make.__func__

    def with_block_rows(cls, geom, variant):
        plan = make(cls, geom, variant)
        return winograd._Plan(plan.variant, plan.th, plan.tw, plan.rows, block_rows)

    monkeypatch.setattr(winograd._Plan, "make", classmethod(with_block_rows))
    rng = np.random.default_rng(1)
    geom = convkit.make_geometry((3, 16, 9, 13), (12, 16, 3, 3), padding=(2, 0))  # 11x11 out
    x, gy = rng.standard_normal(geom.input_shape), rng.standard_normal(geom.output_shape)
    expected = convkit.get_backend("numba").backward_weight(x, gy, geom)
    for tile in TILES:
        np.testing.assert_allclose(WinogradBackend(tile).backward_weight(x, gy, geom),
                                   expected, rtol=1e-10, atol=1e-10)


@pytest.fixture(params=["one-kernel", "python-threads"])
def shared_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How a layer in one block runs: in one numba kernel calling numpy's BLAS (where found),
    or on Python threads (where numpy's BLAS has no GEMM numba can call; the weight gradient
    then deals the block's tile rows out to the workers)."""
    if request.param == "python-threads":
        monkeypatch.setattr(winograd._shared, "gemm_address", lambda dtype: None)
        monkeypatch.setattr(winograd, "gemm_address", lambda dtype: None)  # weight gradient
    elif winograd._shared.gemm_address(np.float64) is None:
        pytest.skip("numpy's BLAS exports no CBLAS GEMM under a known name")
    return request.param


#: Layers in one shared block: 24 channels at 16x16 (the weight regrouped whole), and 64 at
#: 4x4 (the weight outweighs the tiles: blocks of output channels).
ONE_BLOCK_LAYERS = [((1, 24, 16, 16), (40, 24, 3, 3)), ((1, 64, 4, 4), (40, 64, 3, 3))]


def weight_blocks(geom: convkit.ConvGeometry, tile: int) -> int:
    """Into how many blocks of output channels a layer in one shared block cuts its weight
    (the forward pass; the input gradient's transposed geometry alike)."""
    variant = WinogradBackend(tile).variant(geom)
    plan = winograd._Plan.make(geom, variant)
    block = winograd._shared.output_block(geom.out_channels, geom.in_channels,
                                          plan.rows * plan.tw, variant.a,
                                          geom.dtype.itemsize, numba.get_num_threads())
    return math.ceil(geom.out_channels / block)


@pytest.mark.parametrize("workers", [3, 20, 40])
@pytest.mark.parametrize("shapes", ONE_BLOCK_LAYERS, ids=["whole-weight", "weight-blocks"])
def test_more_workers_than_tile_positions(workers: int, shapes: tuple[tuple[int, ...], ...],
                                          shared_path: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine with many threads a shared block has workers without a tile position
    (F(2,3) has 16, F(4,3) 36) or a block of output channels: they must still do their share
    of the transforms."""
    monkeypatch.setattr(winograd.numba, "get_num_threads", lambda: workers)
    rng = np.random.default_rng(4)
    geom = convkit.make_geometry(*shapes, padding=1)
    x, w = rng.standard_normal(geom.input_shape), rng.standard_normal(geom.weight_shape)
    gy = rng.standard_normal(geom.output_shape)
    exact = convkit.get_backend("numba")
    for tile in TILES:
        backend = WinogradBackend(tile)
        assert winograd._Plan.make(geom, backend.variant(geom)).workers() == 1  # shared
        assert (weight_blocks(geom, tile) > 1) == (geom.in_channels == 64)
        np.testing.assert_allclose(backend.forward(x, w, geom), exact.forward(x, w, geom),
                                   rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(backend.backward_input(gy, w, geom),
                                   exact.backward_input(gy, w, geom), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(backend.backward_weight(x, gy, geom),
                                   exact.backward_weight(x, gy, geom), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shapes", [((1, 24, 11, 13), (40, 24, 3, 3)),
                                    ((1, 256, 6, 6), (72, 256, 3, 3))],
                         ids=["whole-weight", "weight-blocks"])
def test_a_shared_block_gives_the_same_bits_in_one_kernel_and_on_python_threads(
    dtype: str, shapes: tuple[tuple[int, ...], ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same transforms and the same BLAS GEMMs, only started differently (with 256
    channels the weight is cut into blocks of output channels, of its rows in the forward
    pass and of its columns in the input gradient: on 2 workers 3 for float32 and 5 for
    float64, the last one short, a worker's run starting inside a block)."""
    if numba.get_num_threads() < 2:
        pytest.skip("one shared block needs two or more worker threads")
    if winograd._shared.gemm_address(dtype) is None:
        pytest.skip("numpy's BLAS exports no CBLAS GEMM under a known name")
    rng = np.random.default_rng(5)
    geom = convkit.make_geometry(*shapes, padding=1, dtype=dtype)
    x = rng.standard_normal(geom.input_shape).astype(dtype)
    w = rng.standard_normal(geom.weight_shape).astype(dtype)
    gy = rng.standard_normal(geom.output_shape).astype(dtype)
    for tile in TILES:
        backend = WinogradBackend(tile)
        assert winograd._Plan.make(geom, backend.variant(geom)).workers() == 1  # shared
        assert (weight_blocks(geom, tile) > 1) == (geom.in_channels == 256)
        in_kernel = backend.forward(x, w, geom), backend.backward_input(gy, w, geom)
        with monkeypatch.context() as patch:
            patch.setattr(winograd._shared, "gemm_address", lambda dtype: None)
            on_threads = backend.forward(x, w, geom), backend.backward_input(gy, w, geom)
        for got, want in zip(in_kernel, on_threads, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape, one_kernel, other",
                         [((1, 128, 28, 28), 4, 2), ((8, 128, 28, 28), 4, 4),
                          ((8, 256, 14, 14), 4, 2)])
def test_a_weight_gradient_in_one_kernel_sums_once(
    shape: tuple[int, ...], one_kernel: int, other: int, shared_path: str,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer in one block (batch 1, 14x14 at batch 8) sums ``M`` once in one kernel, so it
    counts one sum, not one per worker; where that path is not available, or the layer has
    several blocks (8x28x28), it counts one per worker."""
    monkeypatch.setattr(winograd.numba, "get_num_threads", lambda: 2)
    geom = convkit.make_geometry(shape, (shape[1], shape[1], 3, 3), padding=1)
    expected = one_kernel if shared_path == "one-kernel" else other
    assert WinogradBackend().variant(geom, "backward_weight").m == expected


def test_weight_gradient_is_the_same_from_call_to_call() -> None:
    """Eight blocks of tile rows over the workers: dealt out as threads came free, the sums'
    order (and the last bits) changed between calls; dealt out by worker index, never."""
    rng = np.random.default_rng(3)
    geom = convkit.make_geometry((2, 16, 56, 56), (16, 16, 3, 3), padding=1)
    x, gy = rng.standard_normal(geom.input_shape), rng.standard_normal(geom.output_shape)
    backend = WinogradBackend(2)
    results = {backend.backward_weight(x, gy, geom).tobytes() for _ in range(30)}
    assert len(results) == 1


@pytest.mark.parametrize("method", ["forward", "backward_input", "backward_weight"])
def test_concurrent_calls_on_one_backend_get_their_own_results(method: str) -> None:
    """Calls from several threads share the worker pool and the kept buffers: each must get
    the result of its own inputs (the pool threads serve every call in turn)."""
    from concurrent.futures import ThreadPoolExecutor

    backend = WinogradBackend()
    geom = convkit.make_geometry((4, 16, 24, 24), (16, 16, 3, 3), padding=1)
    shapes = {"forward": (geom.input_shape, geom.weight_shape),
              "backward_input": (geom.output_shape, geom.weight_shape),
              "backward_weight": (geom.input_shape, geom.output_shape)}[method]
    rng = np.random.default_rng(0)
    calls = [tuple(rng.standard_normal(s) for s in shapes) for _ in range(24)]
    expected = [getattr(backend, method)(*args, geom) for args in calls]
    for _ in range(3):
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda args: getattr(backend, method)(*args, geom), calls))
        for got, want in zip(results, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_concurrent_calls_leave_blas_threads_as_they_were() -> None:
    """Calls from several threads share the one-thread BLAS limit; the last restores it."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 16, 20, 20)), rng.standard_normal((16, 16, 3, 3))
    expected = _exact(x, w, padding=1)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: convkit.conv2d(x, w, padding=1, backend="winograd"),
                                range(8)))
    for y in results:
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    assert blas_threads() == before
