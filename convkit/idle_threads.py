"""Idle BLAS threads: asking OpenBLAS to let its workers sleep soon after each call.

After a multi-threaded call, OpenBLAS's worker threads keep spinning, waiting for the next
one, for ``2**OPENBLAS_THREAD_TIMEOUT`` clock cycles (28 by default: about 0.1 s). Work of
another thread pool started in that window shares the cores with them: on 2 cores, numba's
3x3 convolution ran 2x slower for about 0.1 s after a two-thread matmul (12.5 ms a call
alone, 24 ms right after). A process that mixes backends pays this at every switch from an
im2col layer to a numba one, and ``auto`` mixes them layer by layer. (The numba backend
quiets its own OpenMP workers the same way: :mod:`convkit_backends.numba_direct._runtime`.)

OpenBLAS reads the variable once, when the library loads, that is when numpy is imported.
So :func:`quiet_blas_threads` runs first thing in ``import convkit``, before convkit
imports numpy, and sets ``OPENBLAS_THREAD_TIMEOUT`` to :data:`SPIN_EXPONENT` unless the
user set it. It takes effect only if numpy was not imported before convkit; otherwise set
the variable before starting Python. :func:`blas_idle_spin` says which happened. The
variable is inherited by child processes, and OpenBLAS libraries loaded later (scipy's)
read it too.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
#: Workers spin ``2**SPIN_EXPONENT`` cycles (about 0.1 ms at 2.5 GHz) before sleeping, as
#: long as the numba backend lets OpenMP's spin: a layer's next GEMM mostly finds them awake,
#: the next layer's kernels find the cores free. Measured on the standard suite, 2 cores:
#: im2col-strided's times were 1.01-1.04x those with OpenBLAS's default (geometric means of
#: two runs), and numba's 3x3 forward right after a matmul took its time alone (12-15 ms
#: against 12.5 ms; 22-24 ms with the default). Sleeping at once (4) cost up to 1.10x.
SPIN_EXPONENT = 18

_state: str | None = None


def quiet_blas_threads() -> None:
    """Set ``OPENBLAS_THREAD_TIMEOUT`` (see the module) unless it is set, and note whether
    numpy's OpenBLAS will see it."""
    global _state
    if _state is not None:
        return
    if VARIABLE in os.environ:
        _state = f"set by the user: {VARIABLE}={os.environ[VARIABLE]}"
    elif "numpy" in sys.modules:
        os.environ[VARIABLE] = str(SPIN_EXPONENT)  # for child processes and later libraries
        _state = (f"OpenBLAS's default (numpy was imported before convkit; set "
                  f"{VARIABLE}={SPIN_EXPONENT} before starting Python to shorten it)")
    else:
        os.environ[VARIABLE] = str(SPIN_EXPONENT)
        _state = f"shortened by convkit: {VARIABLE}={SPIN_EXPONENT}"


def blas_idle_spin() -> str:
    """How long numpy's OpenBLAS workers spin when idle in this process, in words."""
    return _state or "not configured (convkit.idle_threads was not run)"
