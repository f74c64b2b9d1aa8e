"""Exceptions raised by convkit. Each also derives from the builtin a caller would catch."""

from __future__ import annotations


class ConvkitError(Exception):
    """Base class of convkit's own errors."""


class UnknownBackendError(ConvkitError, ValueError):
    """A backend name that no installed plugin provides."""


class BackendUnavailableError(ConvkitError, RuntimeError):
    """A backend that is registered but cannot be used (its import failed, name conflict...)."""


class UnsupportedConfigurationError(ConvkitError, ValueError):
    """A call that the selected backend declares it cannot compute."""


class BackendOutputError(ConvkitError, RuntimeError):
    """A backend returned an array of the wrong shape, dtype or type."""


class MemoryBudgetError(ConvkitError, MemoryError):
    """A call whose buffers would not fit in memory; raised before allocating them."""


class AutotuneWarning(RuntimeWarning):
    """The ``auto`` backend could not use a candidate or its wisdom file; the call still ran."""
