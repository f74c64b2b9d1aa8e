"""Behaviour of the built-in backends that the conformance tests do not see.

The numba set-up (idle-thread policy, on-disk cache) is process-wide and fixed when numba
first loads, so those tests run a fresh Python in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convkit_backends
from convkit.testing import (
    OPERATIONS,
    ConvCase,
    assert_within_bound,
    check_against_naive,
    error_bound,
    run_operation,
)
from convkit_backends._im2col import CACHE_CHUNK_BYTES, DEFAULT_COLUMN_BUDGET
from convkit_backends.im2col_strided import Im2colStridedBackend
from convkit_backends.im2col_take import Im2colTakeBackend

# A fresh process imports the numba backend, runs one small float64 convolution, checks it
# against a plain numpy sum and prints what the test asserts on.
_NUMBA_PROBE = """
import json, os, warnings
import numba
import numpy as np
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import convkit_backends.numba_direct.backend as m
import convkit_backends.numba_direct._runtime as runtime
import sys
from convkit.geometry import make_geometry
x = np.arange(2 * 3 * 5 * 5, dtype=np.float64).reshape(2, 3, 5, 5)
w = np.linspace(-1, 1, 4 * 3 * 3 * 3).reshape(4, 3, 3, 3)
geom = make_geometry(x.shape, w.shape, dtype=np.float64)
y = m.NumbaBackend().forward(x, w, geom)
windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
expected = np.einsum("ncijab,ocab->noij", windows, w)
print(json.dumps({
    "file": m.__file__,
    "correct": bool(np.allclose(y, expected, rtol=1e-12, atol=1e-12)),
    "cache_hits": sum(sum(f.stats.cache_hits.values())
                      for name, module in list(sys.modules.items())
                      if name.startswith("convkit_backends.numba_direct")
                      for f in vars(module).values()
                      if isinstance(f, numba.core.dispatcher.Dispatcher)),
    "caching": runtime.caching,
    "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
}))
"""


def _run_probe(env_updates: dict[str, str], pythonpath: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_CACHE_DIR")}
    env.update(env_updates)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(
        [sys.executable, "-c", _NUMBA_PROBE], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of ``convkit_backends`` whose ``__pycache__`` directories cannot be created (a
    file is there).

    That is what a read-only install looks like to numba, also for root, who may write
    into read-only directories. Returns the directory to put on ``PYTHONPATH``.
    """
    root = tmp_path / "site"
    shutil.copytree(Path(convkit_backends.__file__).parent, root / "convkit_backends",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for package in (root / "convkit_backends").rglob("__init__.py"):
        (package.parent / "__pycache__").write_text("not a directory")
    return root


def test_numba_cache_lives_in_convkits_user_cache_dir(package_copy: Path, tmp_path: Path) -> None:
    """Not in the package's ``__pycache__``: files there outlive a pip uninstall and leave a
    ``convkit_backends`` directory that shadows a later editable install."""
    user_cache = tmp_path / "user-cache"
    env = {"XDG_CACHE_HOME": str(user_cache)}
    first = _run_probe(env, package_copy)
    assert first["file"].startswith(str(package_copy))
    assert first["correct"] and first["caching"] and not first["warnings"]
    assert list((user_cache / "convkit" / "numba").rglob("three_by_three.*.nbi"))

    second = _run_probe(env, package_copy)
    assert second["correct"]
    assert second["cache_hits"] >= 1  # loaded from the user cache, not compiled again


def test_a_change_to_any_kernel_source_starts_a_fresh_cache(package_copy: Path,
                                                           tmp_path: Path) -> None:
    """numba checks only the file of the kernel it loads: a kernel whose callee changed in
    another file (here ``_helpers.py``, which the 3x3 kernels call) would be loaded with the
    old callee compiled in. The cache folder is named by a digest of every source file."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "user-cache")}
    folders = tmp_path / "user-cache" / "convkit" / "numba"
    assert _run_probe(env, package_copy)["correct"]
    before = {p.name for p in folders.iterdir()}
    helpers = package_copy / "convkit_backends" / "numba_direct" / "_helpers.py"
    helpers.write_text(helpers.read_text() + "\n# changed\n")
    again = _run_probe(env, package_copy)
    assert again["correct"] and again["cache_hits"] == 0  # compiled anew, not loaded
    assert len({p.name for p in folders.iterdir()} - before) == 1


def test_numba_writes_no_cache_into_an_installed_package(tmp_path: Path) -> None:
    site = tmp_path / "site"  # a writable install, as pip leaves one
    shutil.copytree(Path(convkit_backends.__file__).parent, site / "convkit_backends",
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = _run_probe({"XDG_CACHE_HOME": str(tmp_path / "user-cache")}, site)
    assert result["correct"] and result["caching"]
    assert not list(site.rglob("*.nbi")) and not list(site.rglob("*.nbc"))
    assert list((tmp_path / "user-cache" / "convkit" / "numba").rglob("*.nbi"))


def test_numba_without_any_writable_cache_compiles_and_warns(
    package_copy: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _run_probe({"XDG_CACHE_HOME": str(blocker / "cache")}, package_copy)
    assert result["correct"]
    assert result["caching"] is False
    assert len(result["warnings"]) == 1
    assert "compiled in every process" in result["warnings"][0]


@pytest.mark.parametrize(
    ("preset", "expected"),
    [({}, ("PASSIVE", "10000")),
     ({"GOMP_SPINCOUNT": "5"}, ("PASSIVE", "5")),
     ({"OMP_WAIT_POLICY": "ACTIVE"}, ("ACTIVE", None))],
)
def test_numba_backend_lets_idle_openmp_threads_sleep(
    preset: dict[str, str], expected: tuple[str, str | None]
) -> None:
    """Unless the user chose a policy, OpenMP workers sleep between kernels after a short
    spin; a policy or spin count the user set stays as it is."""
    result = _run_probe(preset)
    assert (result["omp_wait_policy"], result["gomp_spincount"]) == expected
    assert result["correct"]


# --- column budget of the im2col backends -------------------------------------------------

IM2COL_BACKENDS = (Im2colStridedBackend, Im2colTakeBackend)
# Strided, padded, grouped and dilated, with a batch of 5 so that chunks of 2 leave a tail.
CHUNK_CASE = ConvCase("chunked", (5, 4, 9, 8), (6, 2, 3, 2), stride=(2, 1), padding=1,
                      dilation=(1, 2), groups=2)


def _run_backend(backend, op: str, arrays, geom):
    if op == "forward":
        return backend.forward(arrays.x, arrays.weight, geom)
    if op == "input-grad":
        return backend.backward_input(arrays.grad_output, arrays.weight, geom)
    return backend.backward_weight(arrays.x, arrays.grad_output, geom)


@pytest.mark.parametrize("backend_cls", IM2COL_BACKENDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("images_per_chunk", [1, 2])
def test_chunked_batch_matches_whole_batch(backend_cls, op: str, images_per_chunk: int) -> None:
    geom = CHUNK_CASE.geometry("float64")
    arrays = CHUNK_CASE.arrays("float64")
    whole = backend_cls()
    chunked = backend_cls(column_budget=images_per_chunk * whole._column_bytes(geom.with_batch(1)))
    parts = list(chunked._chunks(geom))
    assert len(parts) == -(-geom.batch // images_per_chunk)  # really processed in chunks
    expected = _run_backend(whole, op, arrays, geom)
    actual = _run_backend(chunked, op, arrays, geom)
    if op == "weight-grad":  # summed chunk by chunk: equal up to rounding of the sums
        assert_within_bound(actual, expected, error_bound(op, arrays, CHUNK_CASE), op)
    else:  # every output depends on one image only: identical
        np.testing.assert_array_equal(actual, expected)



@pytest.mark.parametrize("backend_cls", IM2COL_BACKENDS, ids=lambda c: c.__name__)
def test_column_budget_is_configurable(backend_cls) -> None:
    assert backend_cls().column_budget == DEFAULT_COLUMN_BUDGET
    backend = backend_cls(column_budget=2**20)
    assert backend.column_budget == 2**20
    backend.column_budget = 3 * 2**20
    assert backend.column_budget == 3 * 2**20
    geom = CHUNK_CASE.geometry("float64")
    per_image = backend._column_bytes(geom.with_batch(1))
    backend.column_budget = 3 * per_image - 1  # room for 2 images, not 3
    assert [p.stop - p.start for p in backend._chunks(geom)] == [2, 2, 1]


@pytest.mark.parametrize("backend_cls", IM2COL_BACKENDS, ids=lambda c: c.__name__)
def test_chunks_stay_cache_sized_under_a_larger_budget(backend_cls) -> None:
    geom = CHUNK_CASE.geometry("float64")
    per_image = backend_cls()._column_bytes(geom.with_batch(1))
    backend = backend_cls(column_budget=100 * per_image)
    assert backend.chunk_bytes == min(100 * per_image, CACHE_CHUNK_BYTES)
    backend.column_budget = CACHE_CHUNK_BYTES + 1
    assert backend.chunk_bytes == CACHE_CHUNK_BYTES


def test_reuse_hands_out_the_buffer_while_it_is_large_enough() -> None:
    from convkit_backends._common import reuse

    first = reuse(None, (2, 3, 4), np.float32)
    smaller = reuse(first, (5, 4), np.float32)
    assert smaller.shape == (5, 4) and np.shares_memory(smaller, first)
    assert not np.shares_memory(reuse(first, (5, 5), np.float32), first)  # too small
    assert not np.shares_memory(reuse(first, (2, 3), np.float64), first)  # other dtype


@pytest.mark.parametrize("backend_cls", IM2COL_BACKENDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("budget", "error"), [(0, ValueError), (-5, ValueError),
                                               (1.5e6, TypeError), (True, TypeError)])
def test_bad_column_budget_is_rejected(backend_cls, budget, error) -> None:
    with pytest.raises(error, match="column_budget"):
        backend_cls(column_budget=budget)


# --- numba: unit-stride kernels and their non-finite fallbacks ------------------------------


@pytest.mark.parametrize(("kernel", "stride", "dilation", "padding"),
                         [((3, 2), 1, (1, 2), 0), ((3, 3), 1, (1, 2), 0), ((3, 3), 2, 1, 0),
                          ((3, 3), 2, 1, (1, 2))])
@pytest.mark.parametrize("bad", ["x", "weight", "grad_output"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_numba_non_finite_values_propagate_like_naive(
    kernel: tuple[int, int], stride: int, dilation: tuple[int, int] | int,
    padding: int | tuple[int, int], bad: str, value: float
) -> None:
    """A NaN/Inf lands where the naive backend puts it.

    The long-row stride-1 kernels pass zero scratch columns through the sums, which is only
    safe for finite weights (input gradient) and inputs (weight gradient); otherwise the
    backend takes the row-by-row kernels. Both paths, and stride 2 (phase-split kernels,
    whose zero frames and padding meet the other operand, and the phases fallback), are
    exercised.
    """
    from convkit_backends.naive import NaiveBackend
    from convkit_backends.numba_direct.backend import NumbaBackend

    case = ConvCase("nonfinite", (2, 3, 7, 8), (4, 3, *kernel), stride=stride, padding=padding,
                    dilation=dilation)
    arrays = case.arrays("float64")
    getattr(arrays, bad)[1, 2, 2, 1] = value
    geom = case.geometry("float64")
    for op in OPERATIONS:
        with np.errstate(invalid="ignore"):  # inf - inf and 0 * inf: NaN is the point here
            expected = _run_backend(NaiveBackend(), op, arrays, geom)
            actual = _run_backend(NumbaBackend(), op, arrays, geom)
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=op)
        np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected), err_msg=op)
        np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected), err_msg=op)


# --- 1x1 stride-1 fast path of the im2col backends ----------------------------------------

POINTWISE_CASE = ConvCase("pointwise-grouped", (3, 6, 5, 4), (4, 3, 1, 1), groups=2)


@pytest.mark.parametrize("name", ["im2col-strided", "im2col-take"])
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pointwise_fast_path_matches_naive(name: str, op: str, dtype: str) -> None:
    from convkit_backends._pointwise import is_pointwise

    assert is_pointwise(POINTWISE_CASE.geometry(dtype))
    check_against_naive(name, POINTWISE_CASE, op, dtype)


# Cases for the numba backend's long-row kernels: stride 1 (3x3 included) with dilation,
# asymmetric padding, groups, several scratch columns; larger strides, which run as a sum of
# stride-1 convolutions of phases, with kernels smaller and larger than the stride.
NUMBA_LONG_ROW_CASES = [
    ConvCase("3x3-dil21-pad", (2, 4, 9, 7), (6, 2, 3, 3), padding=(2, 1), dilation=(2, 1),
             groups=2),
    ConvCase("3x3-same-dil2", (1, 3, 8, 11), (2, 3, 3, 3), padding="same", dilation=2),
    # padding beyond the kernel's extent: the input gradient cannot run as a forward pass
    ConvCase("3x3-pad3", (2, 3, 5, 6), (5, 3, 3, 3), padding=(3, 1)),
    ConvCase("2x4-pad", (2, 3, 6, 9), (4, 3, 2, 4), padding=(1, 2)),
    # rows of 7 taps at stride 1: output rows computed in pairs (odd and even counts of
    # output rows and kernel rows, one kernel row, no padding, groups)
    ConvCase("7x7-depthwise-same", (2, 4, 9, 10), (4, 1, 7, 7), padding=3, groups=4),
    ConvCase("5x7-pad", (2, 3, 8, 11), (4, 3, 5, 7), padding=(1, 3)),
    ConvCase("7x7-valid", (1, 2, 12, 9), (3, 2, 7, 7)),
    ConvCase("2x7-groups", (2, 4, 5, 9), (6, 2, 2, 7), padding=(0, 2), groups=2),
    ConvCase("1x7", (1, 3, 4, 10), (2, 3, 1, 7), padding=(0, 3)),
    ConvCase("7x7-s2-pad3", (2, 3, 13, 12), (4, 3, 7, 7), stride=2, padding=3),
    ConvCase("3x3-s2-groups", (2, 4, 9, 8), (6, 2, 3, 3), stride=2, padding=1, groups=2),
    ConvCase("3x3-s2-depthwise-asym", (2, 3, 9, 10), (3, 1, 3, 3), stride=2, padding=(2, 1),
             groups=3),
    ConvCase("2x3-s32", (1, 3, 11, 10), (2, 3, 2, 3), stride=(3, 2), padding=(0, 1)),
    ConvCase("1x1-s2", (2, 3, 7, 6), (4, 3, 1, 1), stride=2),
]


@pytest.mark.parametrize("case", NUMBA_LONG_ROW_CASES, ids=str)
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_long_row_kernels_match_naive(case: ConvCase, op: str, dtype: str) -> None:
    check_against_naive("numba", case, op, dtype)


# --- numba: the kernel choice ------------------------------------------------------------

# (input, weight, stride, padding, dilation) -> the family of forward, input and weight
# gradient with finite operands, and of the two gradients with a non-finite operand.
NUMBA_CHOICES = [
    (((1, 4, 8, 8), (4, 4, 3, 3), 1, 1, 1), ("three_by_three",) * 3 + ("general",
                                                                          "three_by_three")),
    (((1, 4, 8, 8), (4, 4, 3, 3), 1, 3, 1), ("three_by_three", "wide", "three_by_three",
                                              "general", "three_by_three")),
    (((1, 4, 8, 8), (4, 4, 5, 2), 1, 1, 2), ("wide",) * 3 + ("general",) * 2),
    (((1, 8, 9, 9), (8, 8, 3, 3), 2, 1, 1), ("stride_two",) * 3 + ("phases",) * 2),
    (((1, 8, 9, 9), (8, 8, 5, 5), 2, 2, 1), ("phases",) * 5),
    # few input channels per group: the forward pass keeps two output rows in registers
    (((1, 4, 9, 9), (4, 4, 3, 3), 2, 1, 1), ("stride_two",) * 3 + ("phases",) * 2),
    (((1, 3, 9, 9), (4, 3, 7, 7), 2, 3, 1), ("vector_rows",) + ("phases",) * 4),
    (((1, 1, 9, 9), (8, 1, 5, 5), 2, 2, 1), ("vector_rows",) + ("phases",) * 4),
    (((1, 4, 9, 9), (4, 4, 3, 3), 2, 2, 2), ("general",) * 5),
]


@pytest.mark.parametrize(("shapes", "families"), NUMBA_CHOICES, ids=str)
def test_numba_kernel_choice_follows_its_table(shapes, families) -> None:
    from convkit.geometry import make_geometry
    from convkit_backends.numba_direct.choice import choose_kernel

    x_shape, w_shape, stride, padding, dilation = shapes
    geom = make_geometry(x_shape, w_shape, stride=stride, padding=padding, dilation=dilation)
    asked = []

    def finite(answer: bool):
        return lambda: asked.append(answer) or answer

    calls = [("forward", True), ("backward_input", True), ("backward_weight", True),
             ("backward_input", False), ("backward_weight", False)]
    chosen = tuple(choose_kernel(method, geom, finite(answer)).value for method, answer in calls)
    assert chosen == families
    assert len(asked) <= 4  # at most once per call, never for the forward pass


# --- numba: the 3x3 stride-2 input gradient on phase-split planes ------------------------

# Odd and even sizes, rows no window covers (8 at padding 0), output rows that reach only
# the bottom padding (padding 3), single and paired input channels per group, output
# gradient planes per group from 1 (depthwise) to 5, non-contiguous operands.
NUMBA_S2_INPUT_GRAD_CASES = [
    ConvCase("s2-even-pad1", (2, 6, 8, 10), (4, 6, 3, 3), stride=2, padding=1),
    ConvCase("s2-odd-uncovered", (2, 5, 8, 7), (3, 5, 3, 3), stride=2),
    ConvCase("s2-pad3-pad2", (2, 3, 5, 6), (4, 3, 3, 3), stride=2, padding=(3, 2)),
    ConvCase("s2-groups3", (2, 9, 7, 9), (15, 3, 3, 3), stride=2, padding=(0, 1), groups=3),
    ConvCase("s2-depthwise-x2", (3, 4, 10, 8), (8, 1, 3, 3), stride=2, padding=1, groups=4),
    ConvCase("s2-noncontiguous", (2, 4, 9, 6), (6, 2, 3, 3), stride=2, padding=(1, 2),
             groups=2, noncontiguous=True),
]


@pytest.fixture
def no_phases(monkeypatch: pytest.MonkeyPatch):
    """The numba backend module, its stride-1 sub-problem fallback (the ``phases`` family)
    made to fail."""
    from convkit_backends.numba_direct import backend, phases

    def refuse(a, b, geom, sub_call):
        raise AssertionError(f"the phases fallback ran for {geom}")

    for method in ("forward", "backward_input", "backward_weight"):
        monkeypatch.setattr(phases, method, refuse)
    return backend


@pytest.mark.parametrize("case", NUMBA_S2_INPUT_GRAD_CASES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_stride2_input_grad_kernel_matches_naive(case: ConvCase, dtype: str,
                                                       no_phases) -> None:
    check_against_naive("numba", case, "input-grad", dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_stride2_input_grad_kernel_with_unequal_padding(dtype: str, no_phases) -> None:
    """Top/bottom and left/right padding that differ (the public API pads symmetrically):
    the kernel reads the bottom and right padding only through ``Ho`` and ``Wo``."""
    from dataclasses import replace

    from convkit.testing import terms_per_output
    from convkit_backends.naive import NaiveBackend

    case = ConvCase("s2-unequal", (2, 4, 7, 8), (6, 2, 3, 3), stride=2, groups=2)
    for padding in [(2, 0, 1, 3), (0, 3, 2, 0), (1, 4, 0, 1)]:
        geom = replace(case.geometry(dtype), padding=padding)
        rng = np.random.default_rng(len(padding) + sum(padding))
        weight = rng.standard_normal(geom.weight_shape).astype(dtype)
        grad_output = rng.standard_normal(geom.output_shape).astype(dtype)
        actual = no_phases.NumbaBackend().backward_input(grad_output, weight, geom)
        naive = NaiveBackend()
        expected = naive.backward_input(grad_output, weight, geom)
        magnitude = naive.backward_input(np.abs(grad_output).astype(np.float64),
                                         np.abs(weight).astype(np.float64),
                                         replace(geom, dtype=np.dtype(np.float64)))
        eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
        bound = terms_per_output("input-grad", geom) * eps * magnitude + tiny
        assert_within_bound(actual, expected, bound, f"numba input-grad padding={padding}")


def test_numba_stride2_input_grad_takes_the_phases_for_non_finite_weights(no_phases) -> None:
    """The kernel's zero frame would meet an Inf weight (``Inf * 0``): NaN where PyTorch has
    none. Such weights go to the exact phases path."""
    case = NUMBA_S2_INPUT_GRAD_CASES[0]
    arrays = case.arrays()
    arrays.weight[1, 2, 0, 2] = np.inf
    with pytest.raises(AssertionError, match="the phases fallback ran"):
        run_operation("input-grad", arrays, case, "numba")


# --- im2col: the stride-1 input gradient as a forward convolution -------------------------

AS_FORWARD_CASES = [
    ConvCase("3x3-pad1", (2, 6, 7, 8), (4, 6, 3, 3), padding=1),
    ConvCase("grouped-dil-asym", (2, 6, 9, 8), (6, 3, 3, 2), padding=(2, 0), dilation=(2, 1),
             groups=2),
    ConvCase("depthwise-same", (2, 4, 6, 7), (4, 1, 3, 3), padding="same", groups=4),
]


@pytest.mark.parametrize("name", ["im2col-strided", "im2col-take"])
@pytest.mark.parametrize("case", AS_FORWARD_CASES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_input_grad_as_forward_matches_naive(name: str, case: ConvCase, dtype: str) -> None:
    from convkit_backends._common import input_grad_as_forward

    arrays = case.arrays(dtype)
    assert input_grad_as_forward(arrays.weight, case.geometry(dtype)) is not None
    check_against_naive(name, case, "input-grad", dtype)


def test_input_grad_as_forward_only_where_it_pays_and_is_exact() -> None:
    from convkit_backends._common import input_grad_as_forward

    case = AS_FORWARD_CASES[0]
    weight = case.arrays().weight
    more_outputs = ConvCase("widening", (2, 3, 7, 8), (8, 3, 3, 3), padding=1)
    strided = ConvCase("strided", (2, 6, 7, 8), (4, 6, 3, 3), stride=2, padding=1)
    over_padded = ConvCase("over-padded", (2, 6, 7, 8), (4, 6, 3, 3), padding=3)
    for other in (more_outputs, strided, over_padded):
        assert input_grad_as_forward(other.arrays().weight, other.geometry()) is None, other
    weight[0, 0, 1, 1] = np.inf
    assert input_grad_as_forward(weight, case.geometry()) is None
