"""The functional API: ``conv2d`` and its two gradients, with torch.nn.functional semantics.

Every call goes the same way: validate the arrays and build the geometry once
(:mod:`convkit.geometry`), pick the backend (:mod:`convkit.registry`), check that it supports
the call, run it, and check what it returned.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from convkit.backend import ConvBackend
from convkit.errors import BackendOutputError, UnsupportedConfigurationError
from convkit.geometry import (
    SUPPORTED_DTYPES,
    ConvGeometry,
    IntPair,
    Padding,
    make_geometry,
)
from convkit.memory import check_fits
from convkit.parallelism import limit_pools_loaded_since_block_began
from convkit.registry import get_backend

__all__ = ["conv2d", "conv2d_input_grad", "conv2d_weight_grad"]


def conv2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    *,
    backend: str | None = None,
) -> np.ndarray:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    x: ``(N, C, H, W)``; weight: ``(Cout, C / groups, kh, kw)``; bias: ``(Cout,)`` or None.
    stride, dilation: int or ``(h, w)``, at least 1. padding: int or ``(h, w)`` pixels added
    on both sides, ``'valid'`` (none) or ``'same'`` (output size equals input size; stride 1
    only; an even kernel gets its extra row/column at the bottom/right).
    Returns ``y: (N, Cout, Ho, Wo)`` in the input's dtype (float32 or float64).
    """
    x, weight = _float_arrays(x, "x", weight, "weight")
    geom = make_geometry(
        x.shape, weight.shape, stride, padding, dilation, groups, x.dtype, input_name="x"
    )
    b = _checked_bias(bias, x, geom.out_channels)
    return _add_bias(_run(backend, geom, "forward", geom.output_shape, x, weight), b)


def conv2d_input_grad(
    input_shape: tuple[int, int, int, int],
    weight: ArrayLike,
    grad_output: ArrayLike,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    *,
    backend: str | None = None,
) -> np.ndarray:
    """Gradient of a conv2d w.r.t. its input, as ``torch.nn.grad.conv2d_input``.

    input_shape: ``(N, C, H, W)``; weight: ``(Cout, C / groups, kh, kw)``;
    grad_output: ``(N, Cout, Ho, Wo)``. Returns ``grad_x: (N, C, H, W)``.
    """
    weight, grad_output = _float_arrays(weight, "weight", grad_output, "grad_output")
    geom = make_geometry(
        input_shape, weight.shape, stride, padding, dilation, groups, weight.dtype,
        input_name="input_shape",
    )
    _check_grad_output(grad_output, geom.output_shape)
    return _run(backend, geom, "backward_input", geom.input_shape, grad_output, weight)


def conv2d_weight_grad(
    input: ArrayLike,
    weight_shape: tuple[int, int, int, int],
    grad_output: ArrayLike,
    stride: IntPair = 1,
    padding: Padding = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    *,
    backend: str | None = None,
) -> np.ndarray:
    """Gradient of a conv2d w.r.t. its weight, as ``torch.nn.grad.conv2d_weight``.

    input: ``(N, C, H, W)``; weight_shape: ``(Cout, C / groups, kh, kw)``;
    grad_output: ``(N, Cout, Ho, Wo)``. Returns ``grad_w: (Cout, C / groups, kh, kw)``.
    """
    x, grad_output = _float_arrays(input, "input", grad_output, "grad_output")
    geom = make_geometry(
        x.shape, weight_shape, stride, padding, dilation, groups, x.dtype,
        input_name="input", weight_name="weight_shape",
    )
    _check_grad_output(grad_output, geom.output_shape)
    return _run(backend, geom, "backward_weight", geom.weight_shape, x, grad_output)


def _run(
    backend_name: str | None,
    geom: ConvGeometry,
    method: str,
    out_shape: tuple[int, ...],
    a: np.ndarray,
    b: np.ndarray,
) -> np.ndarray:
    """Call ``backend.method(a, b, geom)`` and check that it returned ``out_shape``."""
    backend = get_backend(backend_name)  # may import numba: a threads() block then sets it
    limit_pools_loaded_since_block_began()
    reason = backend.capabilities.unsupported_reason(geom)
    if reason is not None:
        raise UnsupportedConfigurationError(f"backend {backend.name!r}: {reason}")
    _check_memory(backend, method, geom, out_shape, a, b)
    if a.size == 0 or b.size == 0 or 0 in out_shape:
        # An empty batch or channel set: every sum is empty, so the result is zeros. (An empty
        # result: a transposed convolution whose every output row is one no input reaches.)
        return np.zeros(out_shape, geom.dtype)
    compute: Callable[[np.ndarray, np.ndarray, ConvGeometry], object] = getattr(backend, method)
    # NaN and Inf propagate as IEEE arithmetic says; numpy's warnings about them are noise.
    with np.errstate(invalid="ignore", over="ignore"):
        out = compute(np.ascontiguousarray(a), np.ascontiguousarray(b), geom)
    limit_pools_loaded_since_block_began()
    _check_output(backend, method, out, out_shape, geom.dtype)
    return out  # type: ignore[return-value]


def _check_memory(
    backend: ConvBackend,
    method: str,
    geom: ConvGeometry,
    out_shape: tuple[int, ...],
    a: np.ndarray,
    b: np.ndarray,
) -> None:
    """Refuse, before anything is allocated, a call whose buffers exceed the free memory."""
    itemsize = geom.dtype.itemsize
    parts = {
        "result": math.prod(out_shape) * itemsize,
        "workspace": backend.workspace_bytes(geom, method),
        "contiguous copies": sum(arr.nbytes for arr in (a, b) if not arr.flags.c_contiguous),
    }
    what = (f"{method} of a conv2d with input {geom.input_shape}, weight {geom.weight_shape} "
            f"and padding {geom.padding} on backend {backend.name!r}")
    check_fits(sum(parts.values()), what, parts)


def _check_output(
    backend: ConvBackend, method: str, out: object, shape: tuple[int, ...], dtype: np.dtype
) -> None:
    if not isinstance(out, np.ndarray):
        raise BackendOutputError(
            f"backend {backend.name!r}.{method} returned {type(out).__name__}, not an ndarray"
        )
    if out.shape != shape or out.dtype != dtype:
        raise BackendOutputError(
            f"backend {backend.name!r}.{method} returned an array of shape {out.shape} and "
            f"dtype {out.dtype}; expected shape {shape} and dtype {dtype}"
        )


def _float_array(value: ArrayLike, name: str) -> np.ndarray:
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:  # e.g. a ragged nested list
        raise TypeError(f"{name} must be an array, got {type(value).__name__}: {exc}") from None
    if arr.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    return arr


def _float_arrays(
    first: ArrayLike, first_name: str, second: ArrayLike, second_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """A call's two operands as float arrays (:func:`_float_array`); ``TypeError`` if their
    dtypes differ (the message names ``second`` as the odd one)."""
    a, b = _float_array(first, first_name), _float_array(second, second_name)
    _same_dtype(b, second_name, a, first_name)
    return a, b


def _same_dtype(arr: np.ndarray, name: str, ref: np.ndarray, ref_name: str) -> None:
    if arr.dtype != ref.dtype:
        raise TypeError(
            f"{name} has dtype {arr.dtype} but {ref_name} has {ref.dtype}; convert one of them "
            "(convkit does not mix precisions)"
        )


def _checked_bias(bias: ArrayLike | None, x: np.ndarray, out_channels: int) -> np.ndarray | None:
    """``bias`` as an array of shape ``(out_channels,)`` and ``x``'s dtype, or None."""
    if bias is None:
        return None
    b = _float_array(bias, "bias")
    _same_dtype(b, "bias", x, "x")
    if b.shape != (out_channels,):
        raise ValueError(
            f"bias must have shape ({out_channels},) (one per output channel), got {b.shape}"
        )
    return b


def _add_bias(y: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``y: (N, Cout, Ho, Wo)`` plus ``b: (Cout,)`` per channel, in place (y is ours)."""
    if b is not None:
        with np.errstate(invalid="ignore", over="ignore"):
            y += b[:, None, None]
    return y


def _check_grad_output(
    grad_output: np.ndarray, shape: tuple[int, ...], what: str = "convolution"
) -> None:
    if grad_output.shape != shape:
        raise ValueError(
            f"grad_output must have the {what}'s output shape {shape} (N, Cout, Ho, Wo), "
            f"got {grad_output.shape}"
        )
