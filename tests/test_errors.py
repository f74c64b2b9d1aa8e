"""Invalid calls get a ValueError or TypeError naming the parameter; empty batches work.

Every entry of INVALID_CALLS is a distinct mistake; each is checked for the exception type
and for the parameter's name in the message, and none may come from deep inside numpy.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import convkit
from convkit import Conv2d, conv2d, conv2d_input_grad, conv2d_weight_grad

X = np.ones((2, 4, 6, 6))  # (N, C, H, W)
W = np.ones((6, 2, 3, 3))  # groups=2
GY = np.ones((2, 6, 4, 4))


@dataclass(frozen=True)
class Invalid:
    name: str
    call: Callable[[], object]
    error: type[Exception]
    names: str
    """What the message must contain: the parameter's name (a regex)."""


def _layer(**kwargs: object) -> Callable[[], object]:
    args = {"in_channels": 4, "out_channels": 6, "kernel_size": 3, **kwargs}
    return lambda: Conv2d(**args)  # type: ignore[arg-type]


def _forward_then(method: str, *args: object) -> Callable[[], object]:
    def call() -> object:
        layer = Conv2d(4, 6, 3, groups=2, dtype=np.float64)
        layer(X)
        return getattr(layer, method)(*args)

    return call


INVALID_CALLS = [
    # conv2d: arrays
    Invalid("x-3d", lambda: conv2d(X[0], W, groups=2), ValueError, r"\bx must be 4-D"),
    Invalid("weight-3d", lambda: conv2d(X, W[0], groups=2), ValueError, r"\bweight must be 4-D"),
    Invalid("x-none", lambda: conv2d(None, W, groups=2), TypeError, r"\bx must be an array"),
    Invalid("x-int", lambda: conv2d(X.astype(int), W, groups=2), TypeError, r"\bx must have"),
    Invalid("weight-int", lambda: conv2d(X, W.astype(np.int32), groups=2), TypeError,
            r"\bweight must have"),
    Invalid("x-complex", lambda: conv2d(X.astype(complex), W, groups=2), TypeError, r"\bx must"),
    Invalid("x-float16", lambda: conv2d(X.astype(np.float16), W, groups=2), TypeError,
            r"\bx must have dtype float32 or float64"),
    Invalid("x-strings", lambda: conv2d("abc", W), TypeError, r"\bx must have dtype"),
    Invalid("x-ragged", lambda: conv2d([[1.0, 2.0], [3.0]], W), TypeError, r"\bx must be an array"),
    Invalid("mixed-dtypes", lambda: conv2d(X.astype(np.float32), W, groups=2), TypeError,
            r"weight has dtype float64 but x has float32"),
    Invalid("channels-mismatch", lambda: conv2d(X, W), ValueError,
            r"weight has 2 input channels per group, but x has 4"),
    Invalid("zero-height", lambda: conv2d(np.ones((1, 4, 0, 6)), W, padding=2, groups=2),
            ValueError, r"\bx has spatial size 0x6"),
    Invalid("kernel-larger-than-input", lambda: conv2d(np.ones((1, 4, 2, 2)), W, groups=2),
            ValueError, r"weight kernel size 3x3 .* padded x 2x2"),
    # conv2d: parameters
    Invalid("groups-not-dividing-in", lambda: conv2d(X, np.ones((6, 1, 3, 3)), groups=3),
            ValueError, r"groups=3 must divide the input channels"),
    Invalid("groups-not-dividing-out", lambda: conv2d(X, np.ones((5, 2, 3, 3)), groups=2),
            ValueError, r"groups=2 must divide the output channels"),
    Invalid("groups-zero", lambda: conv2d(X, W, groups=0), ValueError, r"\bgroups must be"),
    Invalid("groups-float", lambda: conv2d(X, W, groups=2.0), TypeError, r"\bgroups must be"),
    Invalid("stride-zero", lambda: conv2d(X, W, stride=0, groups=2), ValueError,
            r"\bstride must be at least 1"),
    Invalid("stride-one-element", lambda: conv2d(X, W, stride=(1,), groups=2), ValueError,
            r"\bstride must be an int or a pair"),
    Invalid("stride-float", lambda: conv2d(X, W, stride=1.0, groups=2), TypeError, r"\bstride"),
    Invalid("stride-bool", lambda: conv2d(X, W, stride=True, groups=2), TypeError, r"\bstride"),
    Invalid("stride-str", lambda: conv2d(X, W, stride="2", groups=2), TypeError, r"\bstride"),
    Invalid("dilation-zero", lambda: conv2d(X, W, dilation=(1, 0), groups=2), ValueError,
            r"\bdilation must be at least 1"),
    Invalid("padding-negative", lambda: conv2d(X, W, padding=-1, groups=2), ValueError,
            r"\bpadding must be non-negative"),
    Invalid("padding-bad-string", lambda: conv2d(X, W, padding="full", groups=2), ValueError,
            r"\bpadding must be an int, a pair of ints, 'same' or 'valid'"),
    Invalid("padding-four-values", lambda: conv2d(X, W, padding=(1, 1, 1, 1), groups=2),
            ValueError, r"\bpadding must be an int or a pair"),
    Invalid("padding-none", lambda: conv2d(X, W, padding=None, groups=2), TypeError,
            r"\bpadding"),
    Invalid("same-with-stride", lambda: conv2d(X, W, padding="same", stride=2, groups=2),
            ValueError, r"padding='same' requires stride 1"),
    Invalid("bias-shape", lambda: conv2d(X, W, np.ones(5), groups=2), ValueError,
            r"\bbias must have shape \(6,\)"),
    Invalid("bias-dtype", lambda: conv2d(X, W, np.ones(6, np.float32), groups=2), TypeError,
            r"\bbias has dtype float32"),
    Invalid("bias-int", lambda: conv2d(X, W, np.ones(6, int), groups=2), TypeError,
            r"\bbias must have dtype"),
    Invalid("backend-unknown", lambda: conv2d(X, W, groups=2, backend="nave"), ValueError,
            r"unknown backend 'nave' \(from backend= argument\).*did you mean 'naive'"),
    Invalid("backend-not-str", lambda: conv2d(X, W, groups=2, backend=3), TypeError,
            r"backend name from backend= argument must be a str"),
    # conv2d_input_grad
    Invalid("input_shape-3", lambda: conv2d_input_grad((2, 4, 6), W, GY, groups=2), ValueError,
            r"\binput_shape must be 4-D"),
    Invalid("input_shape-int", lambda: conv2d_input_grad(5, W, GY, groups=2), TypeError,
            r"\binput_shape shape must be a sequence"),
    Invalid("input_shape-negative", lambda: conv2d_input_grad((2, 4, -6, 6), W, GY, groups=2),
            ValueError, r"\binput_shape shape must hold non-negative ints"),
    Invalid("input_shape-channels", lambda: conv2d_input_grad((2, 2, 6, 6), W, GY, groups=2),
            ValueError, r"but input_shape has 2 channels and groups=2"),
    Invalid("input-grad-output-shape", lambda: conv2d_input_grad(X.shape, W, GY[:, :, 1:],
                                                                 groups=2),
            ValueError, r"\bgrad_output must have the convolution's output shape"),
    Invalid("input-grad-output-dtype", lambda: conv2d_input_grad(
        X.shape, W, GY.astype(np.float32), groups=2), TypeError, r"\bgrad_output has dtype"),
    # conv2d_weight_grad
    Invalid("weight_shape-3", lambda: conv2d_weight_grad(X, (6, 2, 3), GY, groups=2), ValueError,
            r"\bweight_shape must be 4-D"),
    Invalid("weight_shape-zero-kernel", lambda: conv2d_weight_grad(X, (6, 2, 0, 3), GY,
                                                                   groups=2),
            ValueError, r"\bweight_shape kernel size must be at least 1x1"),
    Invalid("weight-grad-output-shape", lambda: conv2d_weight_grad(X, W.shape, GY[:1],
                                                                   groups=2),
            ValueError, r"\bgrad_output must have"),
    Invalid("weight-grad-input-int", lambda: conv2d_weight_grad(X.astype(int), W.shape, GY,
                                                                groups=2),
            TypeError, r"\binput must have dtype"),
    # Conv2d
    Invalid("layer-in_channels-zero", _layer(in_channels=0), ValueError, r"\bin_channels must"),
    Invalid("layer-out_channels-negative", _layer(out_channels=-1), ValueError,
            r"\bout_channels must"),
    Invalid("layer-in_channels-float", _layer(in_channels=4.0), TypeError, r"\bin_channels"),
    Invalid("layer-groups", _layer(groups=4), ValueError, r"groups=4 must divide"),
    Invalid("layer-kernel_size-zero", _layer(kernel_size=0), ValueError, r"\bkernel_size must"),
    Invalid("layer-kernel_size-three", _layer(kernel_size=(3, 3, 3)), ValueError,
            r"\bkernel_size must be an int or a pair"),
    Invalid("layer-stride-zero", _layer(stride=0), ValueError, r"\bstride must be at least 1"),
    Invalid("layer-same-with-stride", _layer(padding="same", stride=2), ValueError,
            r"padding='same' requires stride 1"),
    Invalid("layer-dtype-int", _layer(dtype=np.int32), TypeError, r"\bdtype must be float32"),
    Invalid("layer-bias-not-bool", _layer(bias="no"), TypeError, r"\bbias must be True or False"),
    Invalid("layer-rng", _layer(rng="abc"), TypeError, r"\brng must be"),
    Invalid("layer-backend-unknown", _layer(backend="numbaa"), ValueError,
            r"unknown backend 'numbaa'.*did you mean 'numba'"),
    Invalid("layer-forward-channels", lambda: Conv2d(3, 6, 3, dtype=np.float64)(X), ValueError,
            r"\bweight has 3 input channels per group, but x has 4"),
    Invalid("layer-forward-dtype", lambda: Conv2d(4, 6, 3, groups=2)(X), TypeError,
            r"\bx has float64"),
    Invalid("layer-backward-before-forward", lambda: Conv2d(4, 6, 3).backward(GY), RuntimeError,
            r"backward\(\) called before forward\(\)"),
    Invalid("layer-backward-shape", _forward_then("backward", GY[:, :3]), ValueError,
            r"\bgrad_output must have"),
    Invalid("layer-backward-dtype", _forward_then("backward", GY.astype(np.float32)), TypeError,
            r"\bgrad_output has dtype float32"),
]


def test_the_invalid_calls_are_distinct_and_enough() -> None:
    assert len({c.name for c in INVALID_CALLS}) == len(INVALID_CALLS) >= 30


@pytest.mark.parametrize("invalid", INVALID_CALLS, ids=lambda c: c.name)
def test_invalid_call(invalid: Invalid) -> None:
    with pytest.raises(invalid.error, match=invalid.names) as err:
        invalid.call()
    # Raised by convkit's own checks, not by numpy or numba deep inside a computation.
    origin = traceback.extract_tb(err.tb)[-1].filename
    assert "/convkit/" in origin.replace("\\", "/"), origin


# --- empty batches, as in PyTorch -------------------------------------------------------------

EMPTY_CASES = [
    ((0, 4, 6, 6), (6, 2, 3, 3), {"groups": 2}),
    ((0, 3, 5, 7), (4, 3, 2, 3), {"stride": 2, "padding": 1, "dilation": (1, 2)}),
    ((0, 2, 4, 4), (2, 2, 3, 3), {"padding": "same"}),
]


@pytest.mark.parametrize("x_shape, w_shape, params", EMPTY_CASES)
def test_empty_batch_shapes(backend: str, x_shape, w_shape, params) -> None:
    x, w = np.ones(x_shape, np.float32), np.ones(w_shape, np.float32)
    geom = convkit.make_geometry(x_shape, w_shape, **params)
    y = conv2d(x, w, np.ones(w_shape[0], np.float32), backend=backend, **params)
    assert y.shape == geom.output_shape and y.shape[0] == 0 and y.dtype == np.float32
    gy = np.ones(geom.output_shape, np.float32)
    gx = conv2d_input_grad(x_shape, w, gy, backend=backend, **params)
    assert gx.shape == x_shape and gx.dtype == np.float32
    gw = conv2d_weight_grad(x, w_shape, gy, backend=backend, **params)
    assert gw.shape == w_shape and gw.dtype == np.float32
    np.testing.assert_array_equal(gw, 0)  # a sum over no images


@pytest.mark.parametrize("x_shape, w_shape, params", EMPTY_CASES)
def test_empty_batch_matches_torch(x_shape, w_shape, params) -> None:
    torch = pytest.importorskip("torch")
    x, w = torch.zeros(x_shape, requires_grad=True), torch.ones(w_shape, requires_grad=True)
    y = torch.nn.functional.conv2d(x, w, **params)
    y.backward(torch.ones_like(y))
    ours = conv2d(x.detach().numpy(), w.detach().numpy(), **params)
    assert ours.shape == tuple(y.shape)
    gw = conv2d_weight_grad(x.detach().numpy(), w_shape, np.ones(ours.shape, np.float32),
                            **params)
    np.testing.assert_array_equal(gw, w.grad.numpy())
    gx = conv2d_input_grad(x_shape, w.detach().numpy(), np.ones(ours.shape, np.float32),
                           **params)
    assert gx.shape == tuple(x.grad.shape)


def test_layer_on_an_empty_batch() -> None:
    layer = Conv2d(4, 6, 3, padding=1, groups=2)
    y = layer(np.ones((0, 4, 5, 5), np.float32))
    assert y.shape == (0, 6, 5, 5)
    gx = layer.backward(np.ones(y.shape, np.float32))
    assert gx.shape == (0, 4, 5, 5)
    np.testing.assert_array_equal(layer.weight_grad, 0)
    np.testing.assert_array_equal(layer.bias_grad, 0)
    assert layer.bias_grad.shape == (6,)
