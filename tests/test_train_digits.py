"""The digits example (examples/train_digits.py): it trains, and the backend changes nothing.

Needs scikit-learn (the data set); the PyTorch cross-checks also need torch, the plot matplotlib.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import convkit
from convkit_backends.im2col_strided import Im2colStridedBackend

pytest.importorskip("sklearn")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from digits_net import Adam, DigitsCNN, MaxPool2x2, softmax_cross_entropy
from train_digits import History, load_digits, main, train

REFERENCE = "im2col-strided"
SHORT = {"epochs": 3, "subset": 400, "batch_size": 32, "lr": 0.01, "seed": 0,
         "dtype": np.float64}
"""A short run: 320 training images, 10 batches an epoch, 30 Adam steps (with a larger step
than the default, so that the loss falls well within them)."""

# Two backends add each conv output's 9 * C_in <= 144 products in different orders, so they
# differ by at most ~144 * eps = 3e-14 relative per output (convkit.testing.error_bound's
# n * eps). 30 steps of early, well-conditioned training carry such differences forward
# without blowing them up: measured here the loss curves agree to 4.4e-16 (two ulp). 1e-10
# leaves room for other BLAS builds and summation orders, while a backend that is off by a
# single float32 rounding (2**-24 relative, on every forward output) moves them by 5.7e-8
# and is caught (test_the_comparison_sees_a_rounding_sized_difference).
RTOL = 1e-10

_runs: dict[str, History] = {}


def short_run(backend: str) -> History:
    """The short float64 run on ``backend``, trained once per test session."""
    if backend not in _runs:
        _runs[backend] = train(backend=backend, **SHORT)
    return _runs[backend]


def loss_curves(history: History) -> np.ndarray:
    """``(2, epochs)``: training and test loss per epoch."""
    return np.stack([history.column("train_loss"), history.column("test_loss")])


@pytest.mark.parametrize("backend", ["im2col-take", "numba", "naive"])
def test_backends_give_the_same_loss_curve(backend: str) -> None:
    reference, other = short_run(REFERENCE), short_run(backend)
    assert other.backend == backend
    np.testing.assert_allclose(loss_curves(other), loss_curves(reference), rtol=RTOL, atol=0)
    np.testing.assert_array_equal(
        other.column("test_accuracy"), reference.column("test_accuracy")
    )


def test_loss_falls() -> None:
    history = short_run(REFERENCE)
    for curve in loss_curves(history):
        assert np.all(np.diff(curve) < 0), curve
        assert curve[-1] < 0.5 * curve[0], curve
    assert history.epochs[-1].test_accuracy > 0.5  # chance is 0.1


class _RoundingBackend(Im2colStridedBackend):
    """im2col-strided with one float32 rounding error (6e-8 relative) on every output."""

    def forward(self, x, weight, geom):
        return super().forward(x, weight, geom) * (1 + 2.0**-24)


def test_the_comparison_sees_a_rounding_sized_difference() -> None:
    """The tolerance above is tight enough to notice a backend that is off by float32 eps."""
    convkit.register_backend("rounding", _RoundingBackend)
    try:
        perturbed = train(backend="rounding", **SHORT)
    finally:
        convkit.unregister_backend("rounding")
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(
            loss_curves(perturbed), loss_curves(short_run(REFERENCE)), rtol=RTOL, atol=0
        )


def test_same_seed_same_run_and_other_seed_other_run() -> None:
    again = train(backend=REFERENCE, **SHORT)
    np.testing.assert_array_equal(loss_curves(again), loss_curves(short_run(REFERENCE)))
    other = train(backend=REFERENCE, **{**SHORT, "seed": 1})
    assert not np.allclose(loss_curves(other), loss_curves(again), rtol=1e-3)


def test_float32_stays_float32() -> None:
    net = DigitsCNN(dtype=np.float32, rng=0)
    data = load_digits(subset=100, dtype=np.float32)
    logits = net.forward(data.x_train[:4])
    _, grad = softmax_cross_entropy(logits, data.y_train[:4])
    net.backward(grad)
    assert logits.dtype == grad.dtype == np.float32
    pairs = list(net.parameters())
    Adam(0.01).step(pairs)
    assert all(p.dtype == g.dtype == np.float32 for p, g in pairs)


def test_backend_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVKIT_BACKEND", "im2col-take")
    assert train(epochs=1, subset=100).backend == "im2col-take"


def test_split_is_stratified_and_disjoint() -> None:
    data = load_digits(seed=0)
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.x_train.min() >= 0 and data.x_train.max() == 1
    assert np.all(np.bincount(data.y_test, minlength=10) >= 35)
    train_rows = {row.tobytes() for row in data.x_train}
    overlap = sum(row.tobytes() in train_rows for row in data.x_test)
    # load_digits has a few duplicate images; a leak would be hundreds.
    assert overlap < 10


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"subset": 20}, "subset"),
     ({"subset": 10_000}, "subset"), ({"lr": 0.0}, "lr")],
)
def test_bad_arguments_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        train(**{"epochs": 1, "subset": 100, **kwargs})


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(convkit.UnknownBackendError, match="no-such"):
        train(backend="no-such", epochs=1, subset=100)


# --- the numpy layers, checked against PyTorch ---------------------------------------------


def _torch_twin(net: DigitsCNN):
    """The same network in PyTorch, with ``net``'s parameters copied in."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    twin = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128, 10),
    ).double()
    params = [p for p, _ in net.parameters()]
    with torch.no_grad():
        for theirs, ours in zip(twin.parameters(), params, strict=True):
            theirs.copy_(torch.from_numpy(ours))
    return torch, twin


def test_network_matches_pytorch() -> None:
    """Logits, loss and every parameter gradient of DigitsCNN equal PyTorch's (float64)."""
    net = DigitsCNN(dtype=np.float64, rng=0)
    torch, twin = _torch_twin(net)
    data = load_digits(subset=100, dtype=np.float64)
    x, y = data.x_train[:16], data.y_train[:16]

    logits = net.forward(x)
    loss, grad = softmax_cross_entropy(logits, y)
    net.backward(grad)
    t_logits = twin(torch.from_numpy(x))
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(y))
    t_loss.backward()

    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for (_, ours), theirs in zip(net.parameters(), twin.parameters(), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_adam_matches_pytorch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = rng.standard_normal(5)
    theirs = torch.tensor(ours, requires_grad=True)
    adam, t_adam = Adam(0.1), torch.optim.Adam([theirs], lr=0.1)
    for _ in range(4):
        grad = rng.standard_normal(5)
        adam.step([(ours, grad)])
        theirs.grad = torch.from_numpy(grad)
        t_adam.step()
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-12)


def test_maxpool_sends_the_gradient_to_the_first_maximum() -> None:
    pool = MaxPool2x2()
    x = np.array([[[[1.0, 3.0, 0.0, 0.0],
                    [3.0, 2.0, 0.0, -1.0]]]])
    np.testing.assert_array_equal(pool.forward(x), [[[[3.0, 0.0]]]])
    np.testing.assert_array_equal(
        pool.backward(np.array([[[[5.0, 7.0]]]])),
        [[[[0.0, 5.0, 7.0, 0.0],
           [0.0, 0.0, 0.0, 0.0]]]],
    )


# --- the command line ------------------------------------------------------------------------


def test_command_line_trains_and_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    argv = ["--backend", "im2col-take", "--epochs", "2", "--subset", "200", "--plot", str(plot),
            "--progress"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "backend im2col-take, float32" in out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "final test accuracy" in out
    assert "[##############################] 5/5" in err
    assert plot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--backend", "no-such"], "--backend"), (["--subset", "20"], "--subset"),
     (["--epochs", "0"], "--epochs"), (["--dtype", "float16"], "--dtype")],
)
def test_command_line_rejects_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_names_a_bad_backend_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONVKIT_BACKEND", "no-such")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "CONVKIT_BACKEND" in capsys.readouterr().err
