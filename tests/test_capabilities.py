"""Declared capabilities are honoured: an unsupported call is refused, never computed."""

from __future__ import annotations

import numpy as np
import pytest

import convkit
from convkit_backends.naive import NaiveBackend

X = np.ones((2, 4, 7, 7))
W = np.ones((4, 2, 3, 3))
# (what the backend leaves out, a call that needs it, the reason in the error)
REFUSALS = [
    ({"dtypes": frozenset({"float32"})}, {},
     r"dtype float64 is not supported \(supports \['float32'\]\)"),
    ({"groups": False}, {"groups": 2}, r"groups=2 is not supported \(only groups=1\)"),
    ({"dilation": False}, {"dilation": (1, 2)}, r"dilation=\(1, 2\) is not supported"),
    ({"stride": False}, {"stride": 2}, r"stride=\(2, 2\) is not supported"),
    ({"padding": False}, {"padding": "same"}, r"padding=\(1, 1, 1, 1\) is not supported"),
]


@pytest.mark.parametrize(
    "missing, params, reason", REFUSALS, ids=["dtypes", "groups", "dilation", "stride", "padding"]
)
def test_unsupported_call_names_backend_and_capability(missing, params, reason) -> None:
    class Limited(NaiveBackend):
        capabilities = convkit.Capabilities(**missing)
        calls = 0

        def forward(self, x, weight, geom):
            Limited.calls += 1
            return super().forward(x, weight, geom)

        backward_input = backward_weight = None  # type: ignore[assignment]

    convkit.register_backend("limited", Limited)
    weight = W if params.get("groups") == 2 else np.ones((4, 4, 3, 3))
    geom = convkit.make_geometry(X.shape, weight.shape, **params)
    gy = np.ones(geom.output_shape)
    calls = [
        lambda: convkit.conv2d(X, weight, backend="limited", **params),
        lambda: convkit.conv2d_input_grad(X.shape, weight, gy, backend="limited", **params),
        lambda: convkit.conv2d_weight_grad(X, weight.shape, gy, backend="limited", **params),
    ]
    for call in calls:
        with pytest.raises(convkit.UnsupportedConfigurationError, match=reason) as err:
            call()
        assert str(err.value).startswith("backend 'limited': ")
    with convkit.use_backend("limited"), pytest.raises(convkit.UnsupportedConfigurationError):
        convkit.Conv2d(4, 4, 3, dtype=np.float64, **params)(X)
    assert Limited.calls == 0
    # What it does declare still runs.
    x = X.astype(np.float32) if "dtypes" in missing else X
    assert convkit.conv2d(x, np.ones((4, 4, 3, 3), x.dtype), backend="limited").shape == (
        2, 4, 5, 5)
    assert Limited.calls == 1


def test_kernel_sizes_limit_what_runs() -> None:
    class Only3x3(NaiveBackend):
        capabilities = convkit.Capabilities(kernel_sizes=frozenset({(3, 3), (1, 1)}))

    convkit.register_backend("only-3x3", Only3x3)
    assert convkit.conv2d(X, np.ones((4, 4, 3, 3)), backend="only-3x3").shape == (2, 4, 5, 5)
    reason = r"kernel_size=\(2, 3\) is not supported \(supports 1x1, 3x3\)"
    with pytest.raises(convkit.UnsupportedConfigurationError, match=reason):
        convkit.conv2d(X, np.ones((4, 4, 2, 3)), backend="only-3x3")
    assert Only3x3.capabilities.describe().endswith("padding; kernels 1x1, 3x3")
    assert convkit.Capabilities().kernel_sizes is None  # any size, as before
