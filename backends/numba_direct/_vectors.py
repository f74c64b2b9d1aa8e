"""Rows of SIMD vectors held in registers: a numba type and three intrinsics.

numba vectorises loops, not register blocks: a kernel that keeps many output vectors in
registers while it runs over the taps cannot be written as a loop LLVM's vectoriser accepts
(it checks that the stores cannot overlap the loads at run time, and gives up past eight
checks). These intrinsics spell the vectors out. A *row* is a tuple of ``V`` vectors of
``VECTOR_BYTES`` each (8 float32 or 4 float64 lanes) at element offsets ``offsets`` (a
tuple of ``V`` ints) from an index into a 1-D contiguous array:

* :func:`zero_row` -- ``V`` zero vectors;
* :func:`fma_row` -- ``acc[v] + weight * array[index + offsets[v]:][:lanes]``, fused;
* :func:`store_row` -- ``array[index + offsets[v]:][:lanes] = acc[v]``.

``V`` is the tuple's length, so numba compiles a kernel per ``V``. There is no bounds check:
the caller keeps every vector inside the array. 32-byte vectors are native to AVX2 and,
on AVX-512 cores that split 512-bit operations in two (AMD Zen 4), as fast per FLOP as
64-byte ones, with half the lanes lost where a row is not a whole number of vectors.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

#: Bytes per vector.
VECTOR_BYTES = 32


def lanes(dtype: np.dtype) -> int:
    """Elements per vector of ``dtype`` (8 for float32, 4 for float64)."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


class Vector(types.Type):
    """``VECTOR_BYTES`` of ``dtype``: an LLVM vector, kept in a register."""

    def __init__(self, dtype: types.Float) -> None:
        self.dtype = dtype
        self.lanes = VECTOR_BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type: Vector) -> None:
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _row_type(dtype: types.Float, offsets: types.BaseTuple) -> types.UniTuple:
    """A row: one :class:`Vector` of ``dtype`` per entry of ``offsets``."""
    return types.UniTuple(Vector(dtype), len(offsets))


def _vector_pointers(context, builder, array_type, array, index, offsets, count: int) -> list:
    """Pointers to the vectors at ``array[index + offsets[v]]``, ``v < count``."""
    data = context.make_array(array_type)(context, builder, array).data
    pointer = context.get_value_type(Vector(array_type.dtype)).as_pointer()
    starts = [builder.add(index, builder.extract_value(offsets, v)) for v in range(count)]
    return [builder.bitcast(builder.gep(data, [start]), pointer) for start in starts]


@intrinsic
def zero_row(typingctx, array, offsets):
    """One zero vector of ``array``'s dtype per entry of ``offsets``."""
    row = _row_type(array.dtype, offsets)

    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(row), None)

    return row(array, offsets), codegen


@intrinsic
def fma_row(typingctx, acc, weight, array, index, offsets):
    """``acc[v] + weight * array[index + offsets[v]:][:lanes]`` for each ``v``, each one
    rounding (``llvm.fma``)."""
    if weight != array.dtype or acc != _row_type(array.dtype, offsets):
        return None

    def codegen(context, builder, signature, args):
        acc_value, weight_value, array_value, index_value, offsets_value = args
        vector = context.get_value_type(acc.dtype)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3),
            f"llvm.fma.v{vector.count}{vector.element.intrinsic_name}")
        undefined = ir.Constant(vector, ir.Undefined)
        lane0 = builder.insert_element(undefined, weight_value, ir.Constant(ir.IntType(32), 0))
        all_lane0 = ir.Constant(ir.VectorType(ir.IntType(32), vector.count), None)
        splat = builder.shuffle_vector(lane0, undefined, all_lane0)
        out = acc_value
        pointers = _vector_pointers(context, builder, array, array_value, index_value,
                                    offsets_value, len(offsets))
        for v, pointer in enumerate(pointers):
            x = builder.load(pointer, align=array.dtype.bitwidth // 8)
            total = builder.call(fma, [splat, x, builder.extract_value(acc_value, v)])
            out = builder.insert_value(out, total, v)
        return out

    return acc(acc, weight, array, types.intp, offsets), codegen


@intrinsic
def store_row(typingctx, array, index, offsets, acc):
    """``array[index + offsets[v]:][:lanes] = acc[v]`` for each ``v``."""
    if acc != _row_type(array.dtype, offsets):
        return None

    def codegen(context, builder, signature, args):
        array_value, index_value, offsets_value, acc_value = args
        pointers = _vector_pointers(context, builder, array, array_value, index_value,
                                    offsets_value, len(offsets))
        for v, pointer in enumerate(pointers):
            builder.store(builder.extract_value(acc_value, v), pointer,
                          align=array.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(array, types.intp, offsets, acc), codegen
