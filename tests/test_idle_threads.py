"""convkit shortens OpenBLAS's idle spin at import, unless the user chose or it is too late."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from convkit.idle_threads import SPIN_EXPONENT, VARIABLE

REPORT = ("import os; from convkit.idle_threads import blas_idle_spin; "
          f"print(os.environ.get({VARIABLE!r})); print(blas_idle_spin())")


def run_python(script: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != VARIABLE}
    done = subprocess.run([sys.executable, "-c", script], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_import_convkit_first_shortens_the_spin() -> None:
    value, state = run_python("import convkit; " + REPORT)
    assert value == str(SPIN_EXPONENT)
    assert state.startswith("shortened by convkit")


@pytest.mark.parametrize("user_value", ["28", "4"])
def test_a_value_the_user_set_is_kept(user_value: str) -> None:
    value, state = run_python("import convkit; " + REPORT, **{VARIABLE: user_value})
    assert value == user_value
    assert state == f"set by the user: {VARIABLE}={user_value}"


def test_numpy_imported_first_is_reported_as_too_late() -> None:
    value, state = run_python("import numpy, convkit; " + REPORT)
    assert value == str(SPIN_EXPONENT)  # still passed on to child processes
    assert state.startswith("OpenBLAS's default (numpy was imported before convkit")
