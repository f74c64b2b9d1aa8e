"""Train a small CNN on real handwritten digits with any convkit backend.

The data are the 1,797 8x8 images that scikit-learn ships (``sklearn.datasets.load_digits``,
no download), split into a stratified training and test set. The network is
:class:`digits_net.DigitsCNN`: its convolutions are ``convkit.Conv2d``, the rest is numpy.
The backend is chosen by ``--backend`` or else ``CONVKIT_BACKEND``; with the same seed every
backend trains the same network on the same batches, so they differ in speed, not results.

    pip install 'convkit[examples]'
    python examples/train_digits.py --backend numba --plot digits.png

:func:`train` is the whole training loop, usable without the command line.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from digits_net import Adam, DigitsCNN, softmax_cross_entropy
from numpy.typing import DTypeLike

import convkit

__all__ = ["Digits", "EpochResult", "History", "load_digits", "main", "save_plot", "train"]

CLASSES = 10
PIXEL_MAX = 16.0
"""The digits' pixels are integers 0..16; they are scaled to [0, 1]."""
LEARNING_RATE = 0.003
"""Adam's step size: 0.01 learns faster at first but its loss jumps about after 10 epochs."""


@dataclass(frozen=True)
class Digits:
    """Images ``x_*: (N, 1, 8, 8)`` with values in [0, 1], labels ``y_*: (N,)`` in 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(
    *, seed: int = 0, dtype: DTypeLike = np.float32, subset: int | None = None,
    test_fraction: float = 0.2,
) -> Digits:
    """scikit-learn's digits, split (stratified by class, shuffled by ``seed``) into train/test.

    ``subset`` keeps only that many images in all (for quick runs); ``test_fraction`` of them
    form the test set.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError(
            "the digits example needs scikit-learn: pip install 'convkit[examples]'"
        ) from exc
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    images, labels = sklearn_digits(return_X_y=True)
    total = len(labels) if subset is None else subset
    n_test = math.ceil(total * test_fraction)  # as train_test_split rounds a fraction
    if not (n_test >= CLASSES and total - n_test >= CLASSES and total <= len(labels)):
        raise ValueError(
            f"subset must leave at least {CLASSES} training and {CLASSES} test images and be "
            f"at most {len(labels)}, got subset={subset!r} (test_fraction={test_fraction})"
        )
    x = (images / PIXEL_MAX).astype(dtype).reshape(-1, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(
        x, labels, train_size=total - n_test, test_size=n_test, stratify=labels,
        random_state=seed,
    )
    return Digits(x_train, y_train, x_test, y_test)


@dataclass(frozen=True)
class EpochResult:
    """One epoch: mean losses (nats), accuracies (fractions) and training time (seconds).

    The training loss and accuracy are averaged over the epoch's batches as they were trained;
    the test ones are measured after the epoch.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float


@dataclass
class History:
    """What :func:`train` did: the resolved backend, dtype and one :class:`EpochResult` each."""

    backend: str
    dtype: str
    warmup_seconds: float
    """One forward and backward pass on two images before training (numba compiles here)."""
    epochs: list[EpochResult] = field(default_factory=list)

    def column(self, name: str) -> np.ndarray:
        """One field of every epoch, e.g. ``column("train_loss")``: ``(epochs,)`` float64."""
        return np.array([getattr(result, name) for result in self.epochs], dtype=np.float64)


def train(
    *,
    backend: str | None = None,
    epochs: int = 15,
    batch_size: int = 32,
    lr: float = LEARNING_RATE,
    seed: int = 0,
    dtype: DTypeLike = np.float32,
    subset: int | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> History:
    """Train :class:`DigitsCNN` with Adam on mini-batches; return the per-epoch history.

    ``seed`` fixes the split, the initial weights and the batch order. ``on_batch(epoch,
    batches_done, batches)`` and ``on_epoch(result)`` report progress (epochs count from 1).
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    dtype = np.dtype(dtype)
    backend_name = convkit.get_backend(backend).name  # fails early on an unknown name
    data = load_digits(seed=seed, dtype=dtype, subset=subset)
    init_seed, order_seed = np.random.SeedSequence(seed).spawn(2)
    net = DigitsCNN(backend=backend_name, dtype=dtype, rng=np.random.default_rng(init_seed))
    optimizer = Adam(lr)
    order_rng = np.random.default_rng(order_seed)

    start = time.perf_counter()
    net.backward(np.zeros_like(net.forward(data.x_train[:2])))
    history = History(backend_name, dtype.name, time.perf_counter() - start)

    n_train = len(data.y_train)
    n_batches = math.ceil(n_train / batch_size)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = order_rng.permutation(n_train)
        loss_sum = correct = 0.0
        for b in range(n_batches):
            rows = order[b * batch_size:(b + 1) * batch_size]
            logits = net.forward(data.x_train[rows])
            loss, grad = softmax_cross_entropy(logits, data.y_train[rows])
            net.backward(grad)
            optimizer.step(list(net.parameters()))
            loss_sum += loss * len(rows)
            correct += np.count_nonzero(logits.argmax(axis=1) == data.y_train[rows])
            if on_batch is not None:
                on_batch(epoch, b + 1, n_batches)
        seconds = time.perf_counter() - start
        test_logits = net.forward(data.x_test)
        test_loss, _ = softmax_cross_entropy(test_logits, data.y_test)
        result = EpochResult(
            epoch=epoch,
            train_loss=loss_sum / n_train,
            train_accuracy=correct / n_train,
            test_loss=test_loss,
            test_accuracy=float(np.mean(test_logits.argmax(axis=1) == data.y_test)),
            seconds=seconds,
        )
        history.epochs.append(result)
        if on_epoch is not None:
            on_epoch(result)
    return history


def save_plot(history: History, path: str | Path) -> None:
    """Save the loss and accuracy curves (train and test, per epoch) to an image file."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'convkit[examples]'") from exc
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = history.column("epoch")
    for split in ("train", "test"):
        loss_ax.plot(epochs, history.column(f"{split}_loss"), marker=".", label=split)
        acc_ax.plot(epochs, 100 * history.column(f"{split}_accuracy"), marker=".", label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy (nats)", yscale="log", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"digits CNN, backend {history.backend} ({history.dtype})")
    fig.savefig(path, dpi=120)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a small CNN (convkit.Conv2d) on scikit-learn's 8x8 digits."
    )
    parser.add_argument("--backend", help="convkit backend (default: $CONVKIT_BACKEND, else "
                        f"the default); one of {', '.join(convkit.list_backends())}")
    parser.add_argument("--epochs", type=_positive_int, default=15)
    parser.add_argument("--batch-size", type=_positive_int, default=32)
    parser.add_argument("--lr", type=_positive_float, default=LEARNING_RATE,
                        help="Adam step size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--subset", type=_positive_int, help="use only this many images")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="save the learning curves here (needs matplotlib)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar (default: when stderr is a terminal)")
    return parser


def _progress_bar(epochs: int) -> Callable[[int, int, int], None]:
    def show(epoch: int, done: int, total: int) -> None:
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\repoch {epoch:>{len(str(epochs))}}/{epochs} "
                         f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\r\033[K")  # clear the bar; the epoch line replaces it
        sys.stderr.flush()

    return show


def _print_epoch(epochs: int) -> Callable[[EpochResult], None]:
    def show(r: EpochResult) -> None:
        print(f"epoch {r.epoch:>{len(str(epochs))}}/{epochs}  "
              f"train loss {r.train_loss:.4f} acc {100 * r.train_accuracy:5.1f}%  |  "
              f"test loss {r.test_loss:.4f} acc {100 * r.test_accuracy:5.1f}%  |  "
              f"{r.seconds:.2f} s", flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        backend = convkit.get_backend(args.backend).name
    except convkit.ConvkitError as exc:  # the message says whether CONVKIT_BACKEND chose it
        parser.error(f"--backend: {exc}" if args.backend is not None else str(exc))
    try:
        load_digits(subset=args.subset)  # check --subset before printing anything
    except ValueError as exc:
        parser.error(f"--subset: {exc}")
    print(f"backend {backend}, {args.dtype}, seed {args.seed}, {args.epochs} epochs of "
          f"batches of {args.batch_size}, Adam lr {args.lr}")
    history = train(
        backend=backend, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, dtype=args.dtype, subset=args.subset,
        on_batch=_progress_bar(args.epochs) if progress else None,
        on_epoch=_print_epoch(args.epochs),
    )
    final = history.epochs[-1]
    print(f"final test accuracy {100 * final.test_accuracy:.1f}% "
          f"({args.epochs} epochs, {statistics.median(history.column('seconds')):.3f} s/epoch "
          f"median, warm-up {history.warmup_seconds:.2f} s, backend {history.backend})")
    if args.plot is not None:
        save_plot(history, args.plot)
        print(f"learning curves saved to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
