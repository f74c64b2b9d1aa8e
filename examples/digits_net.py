"""A small CNN for 8x8 digit images: ``convkit.Conv2d`` plus a few layers in plain numpy.

The network (shapes for a batch of N images)::

    x (N, 1, 8, 8)
    Conv2d 1->16, 3x3, 'same' -> ReLU -> MaxPool 2x2    (N, 16, 4, 4)
    Conv2d 16->32, 3x3, 'same' -> ReLU -> MaxPool 2x2   (N, 32, 2, 2)
    Flatten -> Linear 128->10                            (N, 10) logits

Every layer has ``forward(x)`` (remembering what its backward pass needs) and
``backward(grad_output) -> grad_input``. Layers with parameters expose ``weight``, ``bias``,
``weight_grad`` and ``bias_grad`` as ``convkit.Conv2d`` does, so :class:`Adam` treats them
alike. Everything stays in the network's dtype (float32 or float64).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol

import numpy as np
from numpy.typing import DTypeLike

from convkit import Conv2d

__all__ = [
    "Adam",
    "DigitsCNN",
    "Flatten",
    "Linear",
    "MaxPool2x2",
    "ReLU",
    "softmax_cross_entropy",
]


class Layer(Protocol):
    def forward(self, x: np.ndarray) -> np.ndarray: ...

    def backward(self, grad_output: np.ndarray) -> np.ndarray: ...


class ReLU:
    """``max(x, 0)`` elementwise; any shape."""

    def __init__(self) -> None:
        self._positive: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._positive = x > 0
        return np.where(self._positive, x, x.dtype.type(0))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return np.where(self._positive, grad_output, grad_output.dtype.type(0))


class MaxPool2x2:
    """Max over non-overlapping 2x2 windows: ``(N, C, H, W) -> (N, C, H/2, W/2)``, H and W even.

    The gradient goes to the first maximum of each window (row-major), as in PyTorch.
    """

    def __init__(self) -> None:
        self._argmax: np.ndarray | None = None
        self._shape: tuple[int, ...] = ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[2:]
        if h % 2 or w % 2:
            raise ValueError(f"MaxPool2x2 needs an even height and width, got x: {x.shape}")
        self._shape = x.shape
        windows = _windows_2x2(x)  # (N, C, H/2, W/2, 4)
        self._argmax = windows.argmax(axis=-1)[..., None]
        return np.take_along_axis(windows, self._argmax, axis=-1)[..., 0]

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        n, c, h, w = self._shape
        windows = np.zeros((n, c, h // 2, w // 2, 4), grad_output.dtype)
        np.put_along_axis(windows, self._argmax, grad_output[..., None], axis=-1)
        # Undo _windows_2x2: (N, C, H/2, W/2, 2, 2) -> (N, C, H/2, 2, W/2, 2) -> (N, C, H, W).
        return windows.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
            self._shape
        )


def _windows_2x2(x: np.ndarray) -> np.ndarray:
    """``(N, C, H, W) -> (N, C, H/2, W/2, 4)``: each 2x2 window's values in row-major order."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, h // 2, w // 2, 4
    )


class Flatten:
    """``(N, ...) -> (N, features)``."""

    def __init__(self) -> None:
        self._shape: tuple[int, ...] = ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return grad_output.reshape(self._shape)


class Linear:
    """``y = x @ weight.T + bias`` with ``x: (N, in_features)``, ``weight: (out, in)``.

    Initialised as ``torch.nn.Linear`` (and :class:`convkit.Conv2d`): uniform on
    ``[-1/sqrt(in_features), 1/sqrt(in_features)]``.
    """

    def __init__(
        self, in_features: int, out_features: int, *, dtype: DTypeLike, rng: np.random.Generator
    ) -> None:
        bound = 1.0 / math.sqrt(in_features)
        self.weight = rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype)
        self.bias = rng.uniform(-bound, bound, out_features).astype(dtype)
        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None
        self._input: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._input = x
        return x @ self.weight.T + self.bias

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        self.weight_grad = grad_output.T @ self._input
        self.bias_grad = grad_output.sum(axis=0)
        return grad_output @ self.weight


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``softmax(logits)`` against integer ``labels``.

    ``logits: (N, classes)``, ``labels: (N,)`` -> ``(loss in nats, grad_logits: (N, classes))``.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = -log_probs[rows, labels].mean()
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1
    return float(loss), grad / logits.dtype.type(len(labels))


class DigitsCNN:
    """The network in the module docstring; ``backend`` is passed to both ``Conv2d`` layers.

    ``rng`` draws the initial parameters (conv1, conv2, linear, in that order), so one seed
    gives the same network whatever the backend.
    """

    def __init__(
        self,
        *,
        backend: str | None = None,
        dtype: DTypeLike = np.float32,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        rng = np.random.default_rng(rng)
        self.dtype = np.dtype(dtype)
        conv = {"padding": "same", "backend": backend, "dtype": self.dtype, "rng": rng}
        self.layers: list[Layer] = [
            Conv2d(1, 16, 3, **conv), ReLU(), MaxPool2x2(),
            Conv2d(16, 32, 3, **conv), ReLU(), MaxPool2x2(),
            Flatten(), Linear(32 * 2 * 2, 10, dtype=self.dtype, rng=rng),
        ]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x: (N, 1, 8, 8)`` -> logits ``(N, 10)``."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad_logits: np.ndarray) -> None:
        """Back-propagate ``grad_logits: (N, 10)``; sets every parameter's gradient."""
        grad = grad_logits
        for layer in reversed(self.layers):
            grad = layer.backward(grad)

    def parameters(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(parameter, its gradient)`` pairs; parameters are updated in place."""
        for layer in self.layers:
            if isinstance(layer, (Conv2d, Linear)):
                yield layer.weight, layer.weight_grad
                yield layer.bias, layer.bias_grad


class Adam:
    """Adam (Kingma & Ba, 2015, Algorithm 1), as ``torch.optim.Adam`` computes it.

    Updates a fixed list of arrays in place; ``lr`` is the step size. The moments are kept in
    each parameter's dtype.
    """

    def __init__(
        self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self._moments: list[tuple[np.ndarray, np.ndarray]] = []
        self._t = 0

    def step(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Update each parameter from its gradient: ``pairs`` as from ``DigitsCNN.parameters``."""
        if not self._moments:
            self._moments = [(np.zeros_like(p), np.zeros_like(p)) for p, _ in pairs]
        self._t += 1
        b1, b2 = self.beta1, self.beta2
        step = self.lr / (1 - b1**self._t)
        sqrt_correction = math.sqrt(1 - b2**self._t)
        for (param, grad), (m, v) in zip(pairs, self._moments, strict=True):
            m *= b1
            m += (1 - b1) * grad
            v *= b2
            v += (1 - b2) * grad * grad
            param -= step * m / (np.sqrt(v) / sqrt_correction + self.eps)
