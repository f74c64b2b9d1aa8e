"""``Conv2d``: a convolution layer with parameters, a forward pass and a backward pass."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from convkit.functional import conv2d, conv2d_input_grad, conv2d_weight_grad
from convkit.geometry import (
    SUPPORTED_DTYPES,
    IntPair,
    Padding,
    int_pair,
    positive_int,
    resolve_padding,
)
from convkit.registry import resolve_backend_name

__all__ = ["Conv2d"]


class Conv2d:
    """A 2-D convolution layer with the semantics of ``torch.nn.Conv2d``.

    Attributes ``weight: (out_channels, in_channels / groups, kh, kw)`` and
    ``bias: (out_channels,)`` (or None) are initialised as PyTorch does: uniform on
    ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` with ``fan_in = in_channels / groups * kh * kw``
    (Kaiming-uniform with ``a = sqrt(5)``). ``rng`` is a ``numpy.random.Generator`` or a seed.

    ``forward(x)`` (or calling the layer) remembers ``x``; ``backward(grad_output)`` then
    returns the input gradient and stores ``weight_grad`` and ``bias_grad`` (overwriting, not
    accumulating). ``backend`` pins the backend; None follows :func:`convkit.use_backend`
    and ``CONVKIT_BACKEND``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: Padding = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        backend: str | None = None,
        dtype: DTypeLike = np.float32,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        in_channels = positive_int(in_channels, "in_channels")
        out_channels = positive_int(out_channels, "out_channels")
        groups = positive_int(groups, "groups")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        if backend is not None:
            resolve_backend_name(backend)  # an unknown name fails here, not at the first call
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels ({in_channels}) and "
                f"out_channels ({out_channels})"
            )
        self.dtype = np.dtype(dtype)
        if self.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.kernel_size = int_pair(kernel_size, "kernel_size", minimum=1)
        self.stride = int_pair(stride, "stride", minimum=1)
        self.dilation = int_pair(dilation, "dilation", minimum=1)
        resolve_padding(padding, self.kernel_size, self.stride, self.dilation)  # validates
        self.padding = padding
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.backend = backend

        try:
            rng = np.random.default_rng(rng)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"rng must be a numpy Generator, a seed or None: {exc}") from None
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight: np.ndarray = rng.uniform(-bound, bound, shape).astype(self.dtype)
        self.bias: np.ndarray | None = (
            rng.uniform(-bound, bound, out_channels).astype(self.dtype) if bias else None
        )
        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None
        self._input: np.ndarray | None = None

    def forward(self, x: ArrayLike) -> np.ndarray:
        """``x: (N, in_channels, H, W)`` -> ``y: (N, out_channels, Ho, Wo)``."""
        x = np.asarray(x)
        y = conv2d(x, self.weight, self.bias, **self._conv_args())
        self._input = x
        return y

    __call__ = forward

    def backward(self, grad_output: ArrayLike) -> np.ndarray:
        """``grad_output: (N, out_channels, Ho, Wo)`` -> ``grad_x: (N, in_channels, H, W)``.

        Uses the input of the last ``forward``; sets ``weight_grad`` and ``bias_grad``.
        """
        if self._input is None:
            raise RuntimeError("Conv2d.backward() called before forward(): there is no input")
        x = self._input
        grad_output = np.asarray(grad_output)
        args = self._conv_args()
        self.weight_grad = conv2d_weight_grad(x, self.weight.shape, grad_output, **args)
        if self.bias is not None:
            self.bias_grad = grad_output.sum(axis=(0, 2, 3), dtype=self.dtype)
        return conv2d_input_grad(x.shape, self.weight, grad_output, **args)

    def _conv_args(self) -> dict[str, object]:
        return {
            "stride": self.stride, "padding": self.padding, "dilation": self.dilation,
            "groups": self.groups, "backend": self.backend,
        }

    def __repr__(self) -> str:
        return (
            f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}, dtype={self.dtype.name})"
        )
