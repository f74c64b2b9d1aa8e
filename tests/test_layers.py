"""Conv2d: PyTorch's initialisation, forward/backward through the functional API."""

from __future__ import annotations

import numpy as np
import pytest

import convkit


def test_parameters_shapes_dtype_and_init_bound() -> None:
    layer = convkit.Conv2d(6, 8, (3, 2), groups=2, rng=0)
    assert layer.weight.shape == (8, 3, 3, 2) and layer.weight.dtype == np.float32
    assert layer.bias is not None and layer.bias.shape == (8,)
    bound = 1 / np.sqrt(3 * 3 * 2)  # fan_in = in_channels / groups * kh * kw
    assert np.abs(layer.weight).max() <= bound and np.abs(layer.bias).max() <= bound
    # Uniform on [-bound, bound]: the spread covers most of the interval.
    assert np.abs(layer.weight).max() > 0.8 * bound


def test_same_seed_same_parameters() -> None:
    a, b = convkit.Conv2d(3, 4, 3, rng=7), convkit.Conv2d(3, 4, 3, rng=7)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert convkit.Conv2d(3, 4, 3, bias=False).bias is None


def test_init_matches_pytorch_distribution() -> None:
    torch = pytest.importorskip("torch")
    ours = convkit.Conv2d(16, 32, 3, rng=0).weight
    theirs = torch.nn.Conv2d(16, 32, 3).weight.detach().numpy()
    assert abs(np.abs(ours).max() - np.abs(theirs).max()) < 0.01 * np.abs(theirs).max()
    assert abs(ours.std() - theirs.std()) < 0.05 * theirs.std()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_backward_match_functional(backend: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    layer = convkit.Conv2d(4, 6, 3, stride=2, padding="valid", dilation=1, groups=2,
                           backend=backend, dtype=dtype, rng=rng)
    x = rng.standard_normal((2, 4, 9, 7)).astype(dtype)
    y = layer(x)
    params = {"stride": 2, "groups": 2, "backend": "naive"}
    np.testing.assert_allclose(y, convkit.conv2d(x, layer.weight, layer.bias, **params),
                               rtol=1e-5, atol=1e-5)
    assert y.dtype == dtype
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = layer.backward(gy)
    np.testing.assert_allclose(
        gx, convkit.conv2d_input_grad(x.shape, layer.weight, gy, **params), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        layer.weight_grad, convkit.conv2d_weight_grad(x, layer.weight.shape, gy, **params),
        rtol=1e-5, atol=1e-5,
    )
    np.testing.assert_allclose(layer.bias_grad, gy.sum(axis=(0, 2, 3)), rtol=1e-5)
    assert layer.bias_grad.dtype == dtype


def test_bias_is_added_per_channel() -> None:
    layer = convkit.Conv2d(1, 2, 1, bias=True, rng=0)
    layer.weight[...] = 0
    layer.bias[...] = [1.5, -2.0]
    y = layer(np.ones((1, 1, 3, 3), np.float32))
    np.testing.assert_array_equal(y[0, 0], 1.5)
    np.testing.assert_array_equal(y[0, 1], -2.0)


def test_backward_before_forward_is_an_error() -> None:
    layer = convkit.Conv2d(1, 1, 1)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((1, 1, 1, 1), np.float32))


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"in_channels": 0}, ValueError, "in_channels"),
        ({"out_channels": 2.5}, TypeError, "out_channels"),
        ({"groups": 3}, ValueError, "groups"),
        ({"kernel_size": 0}, ValueError, "kernel_size"),
        ({"stride": (1, 0)}, ValueError, "stride"),
        ({"padding": -1}, ValueError, "padding"),
        ({"padding": "same", "stride": 2}, ValueError, "padding='same'"),
        ({"dilation": "2"}, TypeError, "dilation"),
        ({"dtype": np.int32}, TypeError, "dtype"),
    ],
)
@pytest.mark.parametrize("layer", ["Conv2d", "ConvTranspose2d"])
def test_bad_constructor_arguments(layer: str, kwargs: dict, error: type, names: str) -> None:
    if layer == "ConvTranspose2d" and "same" in str(kwargs):
        names = "padding must be an int or a pair of ints for a transposed convolution"
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(error, match=names):
        getattr(convkit, layer)(**args)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"padding": "valid"}, ValueError, "does not accept 'same' or 'valid'"),
        ({"output_padding": 1}, ValueError, "smaller than either stride or dilation"),
        ({"output_padding": 2, "stride": 2}, ValueError, "smaller than either stride"),
        ({"output_padding": -1, "stride": 2}, ValueError, "output_padding must be non-negative"),
        ({"output_padding": (1, 1, 1)}, ValueError, "output_padding must be an int or a pair"),
    ],
)
def test_bad_transposed_constructor_arguments(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        convkit.ConvTranspose2d(4, 4, 3, **kwargs)


def test_transposed_parameters_shapes_and_init_bound() -> None:
    layer = convkit.ConvTranspose2d(6, 8, (3, 2), groups=2, dtype=np.float64, rng=0)
    assert layer.weight.shape == (6, 4, 3, 2) and layer.weight.dtype == np.float64
    assert layer.bias is not None and layer.bias.shape == (8,)
    bound = 1 / np.sqrt(4 * 3 * 2)  # fan_in = out_channels / groups * kh * kw, as in PyTorch
    assert np.abs(layer.weight).max() <= bound and np.abs(layer.bias).max() <= bound
    assert np.abs(layer.weight).max() > 0.8 * bound
    assert convkit.ConvTranspose2d(6, 8, 3, bias=False).bias is None
    assert repr(layer).startswith("ConvTranspose2d(6, 8, kernel_size=(3, 2), stride=(1, 1), "
                                  "padding=0, output_padding=0, groups=2")


def test_transposed_init_matches_pytorch_distribution() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ours = convkit.ConvTranspose2d(32, 16, 3, rng=0)
    theirs = torch.nn.ConvTranspose2d(32, 16, 3)
    w, b = (p.detach().numpy() for p in (theirs.weight, theirs.bias))
    assert ours.weight.shape == w.shape == (32, 16, 3, 3) and ours.bias.shape == b.shape
    bound = 1 / np.sqrt(16 * 9)  # both use fan_in = weight.shape[1] * kh * kw
    assert max(np.abs(a).max() for a in (ours.weight, ours.bias, w, b)) <= bound
    assert abs(np.abs(ours.weight).max() - np.abs(w).max()) < 0.01 * bound
    assert abs(ours.weight.std() - w.std()) < 0.05 * w.std()


def test_transposed_backward_before_forward_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"ConvTranspose2d.backward\(\) called before forward"):
        convkit.ConvTranspose2d(1, 1, 1).backward(np.ones((1, 1, 1, 1), np.float32))
