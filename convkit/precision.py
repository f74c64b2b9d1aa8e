"""The precision policy: may an inexact algorithm run when the user did not name it?

Every backend declares its accuracy in :attr:`Capabilities.error_factor
<convkit.Capabilities.error_factor>`: its results lie within that factor times the
direct-sum error bound ``n * eps * sum(|terms|)`` of :func:`convkit.testing.error_bound`.
An exact algorithm (a direct sum, im2col + GEMM) has factor 1; fast algorithms (Winograd,
FFT) trade bits for speed and declare more, and ``convkit check`` verifies the declaration.

The policy decides which backends may run *unasked* (chosen by ``auto``):

* ``'exact'`` (the default): only backends whose factor is 1.
* ``'fast'``: any backend, whatever its declared factor.

Naming a backend (``backend=``, :func:`~convkit.use_backend`, ``CONVKIT_BACKEND``) is an
opt-in of its own and always runs it. Which policy is in force, highest precedence first:
the innermost :func:`precision` block (a ``ContextVar``: threads and asyncio tasks do not
see each other's), :func:`set_precision`, the ``CONVKIT_PRECISION`` environment variable
(read at every call; empty means unset), then ``'exact'``. Anchors: PyTorch's
``torch.set_float32_matmul_precision`` and ``torch.backends.cudnn.allow_tf32``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Literal, cast

Precision = Literal["exact", "fast"]
PRECISIONS: tuple[Precision, ...] = ("exact", "fast")
ENV_VAR = "CONVKIT_PRECISION"
DEFAULT_PRECISION: Precision = "exact"

_in_block: contextvars.ContextVar[Precision | None] = contextvars.ContextVar(
    "convkit_precision", default=None
)
_process_wide: Precision | None = None


def _checked(mode: object, source: str) -> Precision:
    if mode not in PRECISIONS:
        raise ValueError(f"precision from {source} must be one of {PRECISIONS}, got {mode!r}")
    return cast(Precision, mode)


def set_precision(mode: Precision | None) -> None:
    """Set the policy for the whole process (``None`` goes back to the environment/default)."""
    global _process_wide
    _process_wide = None if mode is None else _checked(mode, "set_precision()")


def get_precision() -> Precision:
    """The policy in force here (see the module rules for the precedence)."""
    in_block = _in_block.get()
    if in_block is not None:
        return in_block
    if _process_wide is not None:
        return _process_wide
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return _checked(from_env, f"environment variable {ENV_VAR}")
    return DEFAULT_PRECISION


@contextlib.contextmanager
def precision(mode: Precision) -> Iterator[None]:
    """Use the policy ``mode`` for calls in this block (this thread or task only)."""
    token = _in_block.set(_checked(mode, "precision()"))
    try:
        yield
    finally:
        _in_block.reset(token)


def allows(error_factor: float, error_spread: float = 0.0) -> bool:
    """Whether the policy in force lets a backend declaring ``error_factor`` (and
    ``error_spread``, :attr:`Capabilities.error_spread <convkit.Capabilities.error_spread>`)
    run unasked."""
    return get_precision() == "fast" or (error_factor <= 1.0 and error_spread == 0.0)
