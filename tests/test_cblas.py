"""numpy's BLAS GEMM called from numba code (convkit_backends._cblas)."""

from __future__ import annotations

import numpy as np
import pytest

from convkit_backends._cblas import gemm, gemm_address, gemm_at, gemm_bt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_multiplies_like_numpy(dtype: type) -> None:
    blas = gemm_address(dtype)
    if blas is None:
        pytest.skip("numpy's BLAS exports no CBLAS GEMM under a known name")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 19)).astype(dtype)
    b = rng.standard_normal((19, 23)).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    c = np.full((37, 23), np.nan, dtype)
    gemm(blas.address, blas.index_bits, a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=rtol)
    bt = np.full((37, 11), np.nan, dtype)
    gemm_bt(blas.address, blas.index_bits, a, b[:, :11].T.copy(), bt)  # (11, 19) transposed
    np.testing.assert_allclose(bt, a @ b[:, :11], rtol=rtol)
    at = np.full((19, 23), np.nan, dtype)
    gemm_at(blas.address, blas.index_bits, a[:19].T.copy(), b, at)  # (19, 19) transposed
    np.testing.assert_allclose(at, a[:19] @ b, rtol=rtol)


def test_gemm_takes_rows_with_gaps_between_them() -> None:
    """Operands whose rows are contiguous but further apart than their length (views of
    wider arrays) are multiplied as they are, and the gaps of the result are left alone."""
    blas = gemm_address(np.float64)
    if blas is None:
        pytest.skip("numpy's BLAS exports no CBLAS GEMM under a known name")
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 9))[:, :5], rng.standard_normal((5, 11))[:, :4]
    wide = np.full((6, 7), -1.0)
    gemm(blas.address, blas.index_bits, a, b, wide[:, :4])
    np.testing.assert_allclose(wide[:, :4], a @ b, rtol=1e-12)
    assert (wide[:, 4:] == -1).all()


@pytest.mark.parametrize("dtype", [np.int32, np.complex64, np.float16])
def test_no_gemm_for_other_dtypes(dtype: type) -> None:
    assert gemm_address(dtype) is None


def test_operands_of_mixed_dtypes_are_refused_when_compiled() -> None:
    import numba

    blas = gemm_address(np.float64)
    if blas is None:
        pytest.skip("numpy's BLAS exports no CBLAS GEMM under a known name")
    a, b, c = np.ones((2, 3)), np.ones((3, 2), np.float32), np.empty((2, 2))
    with pytest.raises(numba.core.errors.TypingError, match="one dtype"):
        gemm(blas.address, blas.index_bits, a, b, c)


def test_rows_with_gaps_between_elements_are_refused() -> None:
    blas = gemm_address(np.float64)
    if blas is None:
        pytest.skip("numpy's BLAS exports no CBLAS GEMM under a known name")
    every_other = np.ones((2, 6))[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        gemm(blas.address, blas.index_bits, every_other, np.ones((3, 2)), np.empty((2, 2)))


@pytest.mark.parametrize("layer, bits", [("", 32), ("LP64", 32), ("ilp64", 64)])
def test_mkls_plain_cblas_width_follows_its_interface_layer(
    layer: str, bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain ``cblas_?gemm`` is trusted only with the width its library reports: a
    64-bit function called with 32-bit integers can crash, and the check could not tell."""
    from convkit_backends._cblas import _plain_index_bits

    monkeypatch.setenv("MKL_INTERFACE_LAYER", layer)
    assert _plain_index_bits({"internal_api": "mkl"}, None) == bits
    assert _plain_index_bits({"internal_api": "blis"}, None) is None
