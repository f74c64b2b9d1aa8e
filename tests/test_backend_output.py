"""A backend that returns the wrong thing is caught by the core, with an error naming it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convkit
from convkit_backends.naive import NaiveBackend


class _Transposed(NaiveBackend):
    """Right values, wrong layout: (N, Cout, Wo, Ho)."""

    def forward(self, x, weight, geom):
        return super().forward(x, weight, geom).swapaxes(2, 3)

    def backward_input(self, grad_output, weight, geom):
        return super().backward_input(grad_output, weight, geom)[:, :, :-1]

    def backward_weight(self, x, grad_output, geom):
        return super().backward_weight(x, grad_output, geom)[None]


class _Float64Always(NaiveBackend):
    """Ignores geom.dtype: float64 results for float32 inputs."""

    def forward(self, x, weight, geom):
        wide = dataclasses.replace(geom, dtype=np.dtype(np.float64))
        return super().forward(x.astype(np.float64), weight.astype(np.float64), wide)

    def backward_input(self, grad_output, weight, geom):
        return np.zeros(geom.input_shape, np.float64)

    def backward_weight(self, x, grad_output, geom):
        return np.zeros(geom.weight_shape, np.float16)


class _Lists(NaiveBackend):
    def forward(self, x, weight, geom):
        return super().forward(x, weight, geom).tolist()

    def backward_input(self, grad_output, weight, geom):
        return None

    def backward_weight(self, x, grad_output, geom):
        return 0.0


def _calls(name: str, dtype: type) -> dict[str, object]:
    x, w = np.ones((2, 3, 6, 5), dtype), np.ones((4, 3, 3, 3), dtype)
    gy = np.ones((2, 4, 4, 3), dtype)
    return {
        "forward": lambda: convkit.conv2d(x, w, backend=name),
        "backward_input": lambda: convkit.conv2d_input_grad(x.shape, w, gy, backend=name),
        "backward_weight": lambda: convkit.conv2d_weight_grad(x, w.shape, gy, backend=name),
    }


@pytest.mark.parametrize("method", ["forward", "backward_input", "backward_weight"])
@pytest.mark.parametrize(
    "name, cls, expected",
    [
        ("bad-shape", _Transposed, r"shape \(\d+, \d+, \d+, \d+(, \d+)?\) and dtype float32; "
                                   r"expected shape"),
        ("bad-dtype", _Float64Always, r"dtype float(64|16); expected shape .* dtype float32"),
        ("bad-type", _Lists, r"returned (list|NoneType|float), not an ndarray"),
    ],
)
def test_wrong_output_is_caught_and_names_the_backend(
    name: str, cls: type, expected: str, method: str
) -> None:
    convkit.register_backend(name, cls)
    with pytest.raises(convkit.BackendOutputError, match=expected) as err:
        _calls(name, np.float32)[method]()
    assert f"backend {name!r}.{method}" in str(err.value)
    assert isinstance(err.value, RuntimeError)
    np.testing.assert_array_equal(  # other backends are unaffected
        _calls("naive", np.float32)["forward"](), np.full((2, 4, 4, 3), 27, np.float32)
    )
