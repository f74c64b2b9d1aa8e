"""``Conv2d`` and ``ConvTranspose2d``: convolution layers with parameters, a forward pass and a
backward pass. Both are a :class:`_ConvLayer`, which holds what they share: the checks of the
hyper-parameters, PyTorch's initialisation, and forward/backward through the functional API."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

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
from convkit.transposed import (
    conv_transpose2d,
    conv_transpose2d_input_grad,
    conv_transpose2d_weight_grad,
    output_padding_pair,
    padding_pair,
)

__all__ = ["Conv2d", "ConvTranspose2d"]


class _ConvLayer:
    """A layer computed by three functions: ``forward(x, weight, bias, **params)``,
    ``input_grad(x.shape, weight, grad_output, **params)`` and
    ``weight_grad(x, weight.shape, grad_output, **params)``.

    ``weight`` has shape ``(out_channels, in_channels / groups, kh, kw)``, or
    ``(in_channels, out_channels / groups, kh, kw)`` when ``transposed``. Both are initialised
    as PyTorch's ``_ConvNd.reset_parameters`` does: uniform on ``[-1/sqrt(fan_in),
    1/sqrt(fan_in)]`` with ``fan_in = weight.shape[1] * kh * kw`` (Kaiming-uniform with
    ``a = sqrt(5)``), and so is ``bias: (out_channels,)``.
    """

    _functions: ClassVar[tuple[Callable[..., np.ndarray], ...]]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair,
        dilation: IntPair,
        groups: int,
        bias: bool,
        backend: str | None,
        dtype: DTypeLike,
        rng: np.random.Generator | int | None,
        *,
        transposed: bool,
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
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.backend = backend

        try:
            rng = np.random.default_rng(rng)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"rng must be a numpy Generator, a seed or None: {exc}") from None
        first, second = (in_channels, out_channels) if transposed else (out_channels, in_channels)
        shape = (first, second // groups, *self.kernel_size)
        bound = 1.0 / math.sqrt(math.prod(shape[1:]))  # 1 / sqrt(fan_in)
        self.weight: np.ndarray = rng.uniform(-bound, bound, shape).astype(self.dtype)
        self.bias: np.ndarray | None = (
            rng.uniform(-bound, bound, out_channels).astype(self.dtype) if bias else None
        )
        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None
        self._input: np.ndarray | None = None

    def _params(self) -> dict[str, object]:
        """The hyper-parameters the three functions take, in their order."""
        raise NotImplementedError

    def forward(self, x: ArrayLike) -> np.ndarray:
        """``x: (N, in_channels, H, W)`` -> ``y: (N, out_channels, Ho, Wo)``."""
        x = np.asarray(x)
        y = self._functions[0](x, self.weight, self.bias, **self._params(),
                               backend=self.backend)
        self._input = x
        return y

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """The same as :meth:`forward`."""
        return self.forward(x)

    def backward(self, grad_output: ArrayLike) -> np.ndarray:
        """``grad_output: (N, out_channels, Ho, Wo)`` -> ``grad_x: (N, in_channels, H, W)``.

        Uses the input of the last ``forward``; sets ``weight_grad`` and ``bias_grad``.
        """
        if self._input is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward(): there is no input"
            )
        x = self._input
        grad_output = np.asarray(grad_output)
        _, input_grad, weight_grad = self._functions
        args = {**self._params(), "backend": self.backend}
        self.weight_grad = weight_grad(x, self.weight.shape, grad_output, **args)
        if self.bias is not None:
            self.bias_grad = grad_output.sum(axis=(0, 2, 3), dtype=self.dtype)
        return input_grad(x.shape, self.weight, grad_output, **args)

    def __repr__(self) -> str:
        params = "".join(f"{k}={v!r}, " for k, v in self._params().items())
        return (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, {params}bias={self.bias is not None}, "
            f"dtype={self.dtype.name})"
        )


class Conv2d(_ConvLayer):
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

    _functions = (conv2d, conv2d_input_grad, conv2d_weight_grad)

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
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, groups, bias,
                         backend, dtype, rng, transposed=False)
        resolve_padding(padding, self.kernel_size, self.stride, self.dilation)  # validates
        self.padding = padding

    def _params(self) -> dict[str, object]:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups}


class ConvTranspose2d(_ConvLayer):
    """A 2-D transposed convolution layer with the semantics of ``torch.nn.ConvTranspose2d``.

    ``weight: (in_channels, out_channels / groups, kh, kw)`` and ``bias: (out_channels,)`` (or
    None) are initialised as PyTorch does: uniform on ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``
    with ``fan_in = out_channels / groups * kh * kw`` (PyTorch computes it from the weight's
    second dimension). ``padding`` is an int or a pair (no 'same'/'valid'); ``output_padding``
    adds rows/columns at the bottom/right and must be smaller than stride or dilation.
    ``x: (N, in_channels, H, W)`` -> ``y: (N, out_channels, Ho, Wo)`` with
    ``Ho = (H-1)*stride - 2*padding + dilation*(kh-1) + output_padding + 1``.

    ``forward``, ``backward``, ``weight_grad``, ``bias_grad``, ``backend`` and ``rng`` work as
    in :class:`Conv2d`.
    """

    _functions = (conv_transpose2d, conv_transpose2d_input_grad, conv_transpose2d_weight_grad)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        output_padding: IntPair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntPair = 1,
        *,
        backend: str | None = None,
        dtype: DTypeLike = np.float32,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, groups, bias,
                         backend, dtype, rng, transposed=True)
        padding_pair(padding)  # validates
        output_padding_pair(output_padding, self.stride, self.dilation)  # validates
        self.padding, self.output_padding = padding, output_padding

    def _params(self) -> dict[str, object]:
        return {"stride": self.stride, "padding": self.padding,
                "output_padding": self.output_padding, "groups": self.groups,
                "dilation": self.dilation}
