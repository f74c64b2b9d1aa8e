"""numpy's own BLAS GEMM, callable from numba kernels (``parallel=True`` ones included).

A backend that runs its GEMMs on threads of its own (winograd) otherwise hands each step of
a call from Python thread to Python thread. On a virtual machine a hand-off cost 50-100 us
(a sleeping thread's wake-up, and the GIL between the steps), a third of a batch-1 layer.
Inside one numba kernel the steps are ``prange`` loops, whose threads (OpenMP) spin briefly
between loops, and the GEMMs call BLAS directly.

:func:`gemm_address` finds ``cblas_sgemm``/``cblas_dgemm`` in a BLAS library threadpoolctl
lists (numpy's own first), under a name whose integer width is known: the ``64_``-suffixed
names of numpy's wheels (64-bit), or the plain name where the library says which width it
was built with (OpenBLAS's build configuration, MKL's interface layer). Calling a function
with the wrong width can crash, so nothing is guessed. It then checks the function on a small
product before trusting it. :func:`gemm` and its variants call it from numba code. Where no
such function is found, callers keep their pure-Python path. BLAS must run on one thread
meanwhile (:func:`~convkit_backends._blas.one_blas_thread`).
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic
from threadpoolctl import threadpool_info

from convkit_backends.numba_direct._runtime import jit

#: Names with 64-bit integer arguments: numpy >= 2 wheels (scipy-openblas), numpy 1.x wheels
#: (openblas64_). The plain ``cblas_?gemm`` follows, with the width its library reports.
_SUFFIXED = ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_")
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS enum values


class Gemm(NamedTuple):
    """A CBLAS ``?gemm`` function: its address and the width of its integer arguments."""

    address: int
    index_bits: int


def gemm_address(dtype: np.dtype | type) -> Gemm | None:
    """numpy's BLAS ``cblas_sgemm`` (float32) or ``cblas_dgemm`` (float64), or ``None``."""
    return _find(np.dtype(dtype).char)


@functools.cache
def _find(char: str) -> Gemm | None:
    letter = {"f": "s", "d": "d"}.get(char)
    if letter is None:
        return None
    libraries = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    # numpy's own libraries first (numpy/ or numpy.libs/ beside it; both paths resolved, as
    # site-packages may be reached through a symlink)
    numpy_prefix = os.path.realpath(os.path.dirname(np.__file__))
    libraries.sort(key=lambda info: not os.path.realpath(info["filepath"]).startswith(
        numpy_prefix))
    for info in libraries:
        try:
            library = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        candidates = [(name.format(letter), 64) for name in _SUFFIXED]
        plain_bits = _plain_index_bits(info, library)
        if plain_bits is not None:
            candidates.append((f"cblas_{letter}gemm", plain_bits))
        for name, bits in candidates:
            function = getattr(library, name, None)
            if function is not None and _multiplies(function, bits, np.dtype(char)):
                return Gemm(ctypes.cast(function, ctypes.c_void_p).value or 0, bits)
    return None


def _plain_index_bits(info: dict, library: ctypes.CDLL | None) -> int | None:
    """The integer width of the library's plain ``cblas_?gemm``, where it says: OpenBLAS's
    build configuration names ``USE64BITINT``, MKL's interface layer is chosen by
    ``MKL_INTERFACE_LAYER`` (32-bit unless it says ILP64); else ``None``."""
    if info.get("internal_api") == "openblas":
        get_config = getattr(library, "openblas_get_config", None)
        if get_config is None:
            return None
        get_config.restype = ctypes.c_char_p
        config = (get_config() or b"").decode(errors="replace")
        return 64 if "USE64BITINT" in config else 32
    if info.get("internal_api") == "mkl":
        return 64 if "ILP64" in os.environ.get("MKL_INTERFACE_LAYER", "").upper() else 32
    return None


def _multiplies(function: ctypes._CFuncPtr, bits: int, dtype: np.dtype) -> bool:
    """Whether ``function``, called as a row-major CBLAS GEMM with ``bits``-bit integers,
    multiplies a 3x4 by a 4x2 matrix correctly."""
    index = ctypes.c_int64 if bits == 64 else ctypes.c_int32
    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    pointer = ctypes.c_void_p
    function.restype = None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, index, index, index, scalar,
                         pointer, index, pointer, index, scalar, pointer, index]
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    b = np.arange(8, dtype=dtype).reshape(4, 2) - 3
    c = np.full((3, 2), np.nan, dtype)
    function(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, 3, 2, 4, 1.0, a.ctypes.data, 4, b.ctypes.data,
             2, 0.0, c.ctypes.data, 2)
    return bool(np.array_equal(c, a @ b))


def _call_intrinsic(index_bits: int):
    """An intrinsic ``call(address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)``:
    ``c = op(a) @ op(b)`` (``op`` transposes where its CBLAS enum says so) by the CBLAS
    function at ``address`` (row-major, ``alpha = 1``, ``beta = 0``)."""

    @intrinsic
    def call(typingctx, address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
        if not (a.dtype == b.dtype == c.dtype and a.dtype in (types.float32, types.float64)
                and a.ndim == b.ndim == c.ndim == 2):
            raise TypingError(f"gemm needs 2-D float32 or float64 arrays of one dtype, got "
                              f"{a}, {b}, {c}")
        signature = types.void(address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)

        def codegen(context, builder, sig, args):
            float_type = context.get_value_type(sig.args[6].dtype)
            index_type, enum_type = ir.IntType(index_bits), ir.IntType(32)
            pointer_type = float_type.as_pointer()
            function_type = ir.FunctionType(ir.VoidType(), [
                enum_type, enum_type, enum_type, index_type, index_type, index_type,
                float_type, pointer_type, index_type, pointer_type, index_type, float_type,
                pointer_type, index_type])
            function = builder.inttoptr(args[0], function_type.as_pointer())

            def index(value):
                return builder.trunc(value, index_type) if index_bits < 64 else value

            def data(position):
                array = context.make_array(sig.args[position])(context, builder,
                                                               args[position])
                return array.data

            builder.call(function, [
                ir.Constant(enum_type, _ROW_MAJOR), builder.trunc(args[1], enum_type),
                builder.trunc(args[2], enum_type), index(args[3]), index(args[4]),
                index(args[5]), ir.Constant(float_type, 1.0), data(6), index(args[7]),
                data(8), index(args[9]), ir.Constant(float_type, 0.0), data(10),
                index(args[11])])
            return context.get_dummy_value()

        return signature, codegen

    return call


_call64 = _call_intrinsic(64)
_call32 = _call_intrinsic(32)


@jit(nogil=True)
def gemm(address, index_bits, a, b, c):
    """``c[...] = a @ b`` by the CBLAS function ``address`` (:class:`Gemm`): ``a: (M, K)``,
    ``b: (K, N)``, ``c: (M, N)`` of one dtype, each with contiguous rows."""
    m, k = a.shape
    _gemm(address, index_bits, _NO_TRANS, _NO_TRANS, m, b.shape[1], k, a, b, c)


@jit(nogil=True)
def gemm_at(address, index_bits, a, b, c):
    """``c[...] = a.T @ b`` as :func:`gemm` does ``a @ b``: ``a: (K, M)``."""
    k, m = a.shape
    _gemm(address, index_bits, _TRANS, _NO_TRANS, m, b.shape[1], k, a, b, c)


@jit(nogil=True)
def gemm_bt(address, index_bits, a, b, c):
    """``c[...] = a @ b.T`` as :func:`gemm` does ``a @ b``: ``b: (N, K)``."""
    m, k = a.shape
    _gemm(address, index_bits, _NO_TRANS, _TRANS, m, b.shape[0], k, a, b, c)


@jit(inline="always")
def _gemm(address, index_bits, trans_a, trans_b, m, n, k, a, b, c):
    size = a.itemsize
    if a.strides[1] != size or b.strides[1] != size or c.strides[1] != size:
        raise ValueError("gemm needs operands whose rows are contiguous")
    lda, ldb, ldc = a.strides[0] // size, b.strides[0] // size, c.strides[0] // size
    if index_bits == 64:
        _call64(address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
    else:
        _call32(address, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
