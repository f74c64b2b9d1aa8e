"""convkit: 2-D convolution on the CPU with pluggable backends.

>>> import numpy as np, convkit
>>> x = np.ones((1, 3, 8, 8), np.float32); w = np.ones((4, 3, 3, 3), np.float32)
>>> convkit.conv2d(x, w, padding="same").shape
(1, 4, 8, 8)
"""
# ruff: noqa: E402 (the idle-spin setting must come before any import of numpy)

from convkit.idle_threads import quiet_blas_threads as _quiet_blas_threads

_quiet_blas_threads()  # before convkit imports numpy: OpenBLAS reads it when it loads

from convkit import autotune
from convkit.backend import Capabilities, ConvBackend
from convkit.errors import (
    BackendOutputError,
    BackendUnavailableError,
    ConvkitError,
    MemoryBudgetError,
    UnknownBackendError,
    UnsupportedConfigurationError,
)
from convkit.functional import conv2d, conv2d_input_grad, conv2d_weight_grad
from convkit.geometry import ConvGeometry, make_geometry
from convkit.layers import Conv2d, ConvTranspose2d
from convkit.parallelism import apply_environment as _apply_thread_environment
from convkit.parallelism import threads
from convkit.precision import get_precision, precision, set_precision
from convkit.registry import (
    get_backend,
    list_backends,
    refresh_backends,
    register_backend,
    unregister_backend,
    use_backend,
)
from convkit.transposed import (
    conv_transpose2d,
    conv_transpose2d_input_grad,
    conv_transpose2d_weight_grad,
)

__version__ = "0.1.0"

_apply_thread_environment()  # CONVKIT_NUM_THREADS: before numba or torch is loaded

__all__ = [
    "BackendOutputError",
    "BackendUnavailableError",
    "Capabilities",
    "Conv2d",
    "ConvBackend",
    "ConvGeometry",
    "ConvTranspose2d",
    "ConvkitError",
    "MemoryBudgetError",
    "UnknownBackendError",
    "UnsupportedConfigurationError",
    "__version__",
    "autotune",
    "conv2d",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "conv_transpose2d",
    "conv_transpose2d_input_grad",
    "conv_transpose2d_weight_grad",
    "get_backend",
    "get_precision",
    "list_backends",
    "make_geometry",
    "precision",
    "refresh_backends",
    "register_backend",
    "set_precision",
    "threads",
    "unregister_backend",
    "use_backend",
]
