"""The fft backend: tiling and batch chunks, its declared workspace, its refusals, and a
clean error where scipy is missing. Its accuracy is checked by the conformance tests against
the bound it declares (``error_factor`` and ``error_spread``)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from test_buffers import assert_later_calls_leave_results_alone
from test_memory import traced_workspace

import convkit
from convkit.testing import ConvArrays, ConvCase, declared_bound, error_bound, run_operation
from convkit_backends import fft
from convkit_backends.fft import FftBackend, fft_workspace_bytes, plan

MiB = 2**20
OPS = ("forward", "input-grad", "weight-grad")


def _check(case: ConvCase, backend: str, dtype: str = "float64") -> None:
    arrays = case.arrays(dtype)
    capabilities = convkit.get_backend("fft").capabilities
    for op in OPS:
        actual = run_operation(op, arrays, case, backend).astype(np.float64)
        wide = ConvArrays(*(a.astype(np.float64) for a in (arrays.x, arrays.weight,
                                                           arrays.grad_output)))
        expected = run_operation(op, wide, case, "im2col-strided")
        bound = declared_bound(op, arrays, case, capabilities)
        assert np.all(np.abs(actual - expected) <= bound), (op, case)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", [
    ConvCase("tiled-dense", (3, 4, 45, 38), (5, 4, 7, 5), padding=(3, 2)),
    ConvCase("tiled-depthwise-x2", (2, 3, 40, 41), (6, 1, 9, 9), padding=4, groups=3),
    ConvCase("tiled-dilated-groups", (2, 4, 33, 30), (4, 2, 3, 4), padding=(2, 3), dilation=3,
             groups=2),
    ConvCase("big-padding", (2, 2, 9, 10), (3, 2, 3, 3), padding=(6, 5)),
], ids=str)
def test_tiles_and_batch_chunks(case: ConvCase, dtype: str) -> None:
    """A small budget forces several tiles per image and one image per chunk."""
    convkit.register_backend("fft-small", FftBackend(budget=64 * 1024))
    geom = case.geometry(dtype)
    khe = geom.dilation[0] * (geom.kernel_size[0] - 1) + 1
    kwe = geom.dilation[1] * (geom.kernel_size[1] - 1) + 1
    tiling = plan(geom.out_size, (khe, kwe), geom.batch, geom.in_channels, geom.out_channels,
                  geom.weight_shape[1], geom.out_channels // geom.groups, geom.dtype.itemsize,
                  64 * 1024)
    assert tiling.tiles > 1 or case.name == "big-padding"
    _check(case, "fft-small", dtype)


def test_stride_is_refused() -> None:
    x, w = np.ones((1, 1, 8, 8)), np.ones((1, 1, 3, 3))
    with pytest.raises(convkit.UnsupportedConfigurationError, match="stride"):
        convkit.conv2d(x, w, stride=2, backend="fft")


def test_declared_bound_of_an_exact_backend_is_the_direct_sum_bound() -> None:
    case = ConvCase("c", (2, 3, 6, 6), (4, 3, 3, 3), padding=1)
    arrays = case.arrays("float32")
    for op in OPS:
        assert np.array_equal(declared_bound(op, arrays, case, convkit.Capabilities()),
                              error_bound(op, arrays, case))


def test_results_are_new_contiguous_arrays_of_the_dtype() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    y = convkit.conv2d(x, w, padding=2, backend="fft")
    assert y.dtype == np.float32 and y.flags.c_contiguous and y.flags.owndata


GEOMETRIES = [((2, 16, 64, 64), (16, 16, 11, 11), 5, 1), ((3, 8, 40, 40), (8, 1, 9, 9), 4, 8),
              ((2, 6, 30, 30), (9, 2, 5, 5), 2, 3)]


@pytest.mark.parametrize("x_shape, w_shape, padding, groups", GEOMETRIES)
def test_a_later_call_leaves_earlier_results_alone(x_shape, w_shape, padding: int,
                                                   groups: int) -> None:
    """The backend reuses its work buffers from call to call: no result may be one of them."""
    geom = convkit.make_geometry(x_shape, w_shape, padding=padding, groups=groups)
    assert_later_calls_leave_results_alone(FftBackend(), geom)


def test_auto_counts_what_its_candidates_keep() -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 8, 30, 30)), rng.standard_normal((8, 8, 9, 9))
    convkit.conv2d(x, w, padding=4, backend="fft")
    kept = convkit.get_backend("fft").retained_bytes()
    assert kept > 0 and convkit.get_backend("auto").retained_bytes() >= kept


@pytest.mark.parametrize("method", ["forward", "backward_input", "backward_weight"])
@pytest.mark.parametrize("budget", [fft.DEFAULT_BUDGET, 256 * 1024])
@pytest.mark.parametrize("x_shape, w_shape, padding, groups", GEOMETRIES)
def test_declared_workspace_bounds_the_measured_peak(
    method: str, budget: int, x_shape, w_shape, padding: int, groups: int
) -> None:
    """tracemalloc: peak minus the result <= the FFT path's declared workspace + 1 MiB."""
    rng = np.random.default_rng(0)
    geom = convkit.make_geometry(x_shape, w_shape, padding=padding, groups=groups)
    x, w, gy = (rng.standard_normal(s) for s in (x_shape, w_shape, geom.output_shape))
    backend = FftBackend(budget=budget)
    args = {"forward": (x, w), "backward_input": (gy, w), "backward_weight": (x, gy)}[method]
    declared = fft_workspace_bytes(geom, method, budget)
    traced = traced_workspace(backend, method, args, geom, warm_with=FftBackend(budget=budget))
    assert traced <= declared + MiB
    assert backend.workspace_bytes(geom, method) >= declared


def test_missing_scipy_says_how_to_install() -> None:
    code = (
        "import sys; sys.modules['scipy'] = None; sys.modules['scipy.fft'] = None\n"
        "import convkit\n"
        "try:\n    convkit.get_backend('fft')\n"
        "except convkit.BackendUnavailableError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "not installed: pip install scipy" in out


@pytest.mark.parametrize("x_shape, w_shape, options, expected", [
    ((8, 64, 28, 28), (64, 64, 11, 11), {"padding": 5}, True),
    ((8, 64, 28, 28), (64, 64, 7, 7), {"padding": 3}, True),
    ((8, 64, 28, 28), (64, 64, 5, 5), {"padding": 2}, True),
    ((8, 32, 56, 56), (32, 32, 5, 5), {"padding": 2}, True),
    ((1, 128, 56, 56), (128, 128, 7, 7), {"padding": 3}, True),
    ((1, 64, 28, 28), (64, 64, 11, 11), {"padding": 5}, True),
    ((1, 64, 28, 28), (64, 64, 7, 7), {"padding": 3}, True),  # forward loses, gradients win
    ((1, 64, 28, 28), (64, 64, 5, 5), {"padding": 2}, False),
    ((8, 128, 14, 14), (128, 128, 5, 5), {"padding": 2, "dtype": np.float32}, True),
    ((8, 64, 28, 28), (64, 64, 3, 3), {"padding": 1}, False),
    ((8, 256, 28, 28), (256, 256, 3, 3), {"padding": 1}, False),  # scores high, 9 taps
    ((8, 16, 56, 56), (16, 16, 5, 5), {"padding": 2}, False),
    ((16, 32, 32, 32), (32, 32, 5, 5), {"padding": 2}, True),
    ((8, 64, 28, 28), (64, 64, 11, 11), {"stride": 2}, False),
    ((8, 128, 56, 56), (128, 1, 31, 31), {"padding": 15, "groups": 128}, True),
    ((8, 128, 56, 56), (128, 1, 15, 15), {"padding": 7, "groups": 128}, False),
    ((8, 128, 56, 56), (128, 1, 19, 19), {"padding": 9, "groups": 128}, True),
    ((8, 128, 56, 56), (128, 1, 17, 17), {"padding": 8, "groups": 128}, True),
    ((8, 128, 56, 56), (128, 1, 23, 23), {"padding": 11, "groups": 128}, True),
    ((8, 128, 56, 56), (128, 1, 7, 7), {"dilation": 3, "groups": 128}, False),  # 19x19 extent
    ((8, 64, 28, 28), (64, 64, 3, 3), {"dilation": 4}, False),  # 9x9 extent, 9 taps
])
def test_fft_worth_it(x_shape, w_shape, options, expected) -> None:
    geom = convkit.make_geometry(x_shape, w_shape, **options)
    assert fft.fft_worth_it(geom) is expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", [
    ConvCase("circ-same", (2, 8, 28, 28), (4, 8, 11, 11), padding=5),
    ConvCase("circ-same-even", (2, 8, 20, 17), (3, 8, 6, 4), padding="same"),
    ConvCase("circ-one-sided", (2, 8, 22, 22), (3, 8, 7, 7), padding=(6, 0)),
    ConvCase("circ-dilated", (2, 8, 24, 24), (4, 8, 5, 5), padding=4, dilation=2),
    ConvCase("circ-groups", (2, 8, 20, 20), (4, 4, 7, 7), padding=3, groups=2),
    ConvCase("circ-big-padding", (2, 8, 9, 10), (3, 8, 3, 5), padding=(6, 5)),
], ids=str)
def test_one_tile_images_take_a_circular_length(case: ConvCase, dtype: str) -> None:
    """One tile per image, shorter than the linear convolution along at least one axis (the
    forward pass's and weight gradient's tiling; the input gradient plans its own): the
    wrapped-around terms must miss every wanted output, in all three operations."""
    geom = case.geometry(dtype)
    tiling = fft.layer_tiling(geom, fft.DEFAULT_BUDGET)
    khe, kwe = fft.dilated_size(geom)
    (ho, wo) = geom.out_size
    assert tiling.tiles == 1
    assert tiling.Th < ho + khe - 1 or tiling.Tw < wo + kwe - 1
    _check(case, "fft", dtype)


def test_a_large_image_runs_in_bands_of_tile_rows() -> None:
    """One image whose tiles exceed the budget: bands of tile rows, same results."""
    case = ConvCase("bands", (2, 3, 150, 70), (4, 3, 9, 7), padding=(4, 3))
    geom = case.geometry()
    small = 2 * 2**20
    tiling = plan(geom.out_size, geom.kernel_size, 2, 3, 4, 3, 4, 8, small)
    units = list(fft.chunks(2, tiling, 3, 4, 8, small))
    assert tiling.nh > 1 and any(u.rows < tiling.nh for u in units)
    convkit.register_backend("fft-bands", FftBackend(budget=small))
    _check(case, "fft-bands")
    _check(ConvCase("bands-dw", (1, 4, 160, 50), (4, 1, 11, 11), padding=5, groups=4),
           "fft-bands")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", [
    ConvCase("dw-same", (2, 3, 20, 17), (3, 1, 7, 5), padding="same", groups=3),
    ConvCase("dw-valid", (2, 3, 20, 17), (6, 1, 7, 5), groups=3),
    ConvCase("dw-wide-padding", (2, 3, 9, 10), (3, 1, 3, 3), padding=(6, 5), groups=3),
    ConvCase("dw-one-sided", (1, 2, 12, 12), (2, 1, 5, 5), padding=(4, 0), groups=2),
], ids=str)
def test_depthwise_single_tile(case: ConvCase, dtype: str) -> None:
    """One tile per image: unshifted transforms read at shifted (maybe wrapped) offsets."""
    _check(case, "fft", dtype)


def test_transforms_follow_convkits_thread_limit() -> None:
    backend = convkit.get_backend("fft")
    with convkit.threads(1):
        assert backend._workers() == 1
    assert backend._workers() >= 1
    assert type(backend)(workers=3)._workers() == 3
