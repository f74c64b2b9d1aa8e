"""Behaviour of the built-in backends that the conformance tests do not see.

The numba set-up (idle-thread policy, on-disk cache) is process-wide and fixed when numba
first loads, so those tests run a fresh Python in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import convkit_backends

# A fresh process imports the numba backend, runs one small float64 convolution, checks it
# against a plain numpy sum and prints what the test asserts on.
_NUMBA_PROBE = """
import json, os, warnings
import numpy as np
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import convkit_backends.numba_loops as m
import convkit_backends._numba_runtime as runtime
from convkit.geometry import make_geometry
x = np.arange(2 * 3 * 5 * 5, dtype=np.float64).reshape(2, 3, 5, 5)
w = np.linspace(-1, 1, 4 * 3 * 3 * 3).reshape(4, 3, 3, 3)
geom = make_geometry(x.shape, w.shape, dtype=np.float64)
y = m.NumbaBackend().forward(x, w, geom)
windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
expected = np.einsum("ncijab,ocab->noij", windows, w)
print(json.dumps({
    "file": m.__file__,
    "correct": bool(np.allclose(y, expected, rtol=1e-12, atol=1e-12)),
    "cache_hits": sum(m._forward.stats.cache_hits.values()),
    "caching": runtime.caching,
    "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
}))
"""


def _run_probe(env_updates: dict[str, str], pythonpath: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NUMBA_CACHE_DIR")}
    env.update(env_updates)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(
        [sys.executable, "-c", _NUMBA_PROBE], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of ``convkit_backends`` whose ``__pycache__`` cannot be created (a file is there).

    That is what a read-only install looks like to numba, also for root, who may write
    into read-only directories. Returns the directory to put on ``PYTHONPATH``.
    """
    root = tmp_path / "site"
    package = root / "convkit_backends"
    package.mkdir(parents=True)
    for source in Path(convkit_backends.__file__).parent.glob("*.py"):
        shutil.copy(source, package / source.name)
    (package / "__pycache__").write_text("not a directory")
    return root


def test_numba_cache_falls_back_to_user_cache_dir(package_copy: Path, tmp_path: Path) -> None:
    user_cache = tmp_path / "user-cache"
    env = {"XDG_CACHE_HOME": str(user_cache)}
    first = _run_probe(env, package_copy)
    assert first["file"].startswith(str(package_copy))
    assert first["correct"] and first["caching"] and not first["warnings"]
    assert list((user_cache / "numba").rglob("numba_loops._forward-*.nbi"))

    second = _run_probe(env, package_copy)
    assert second["correct"]
    assert second["cache_hits"] >= 1  # loaded from the user cache, not compiled again


def test_numba_without_any_writable_cache_compiles_and_warns(
    package_copy: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _run_probe({"XDG_CACHE_HOME": str(blocker / "cache")}, package_copy)
    assert result["correct"]
    assert result["caching"] is False
    assert len(result["warnings"]) == 1
    assert "compiled in every process" in result["warnings"][0]


@pytest.mark.parametrize(("preset", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_numba_backend_lets_idle_openmp_threads_sleep(
    preset: str | None, expected: str
) -> None:
    """Unless the user chose a policy, OpenMP workers sleep between kernels (no spinning)."""
    result = _run_probe({} if preset is None else {"OMP_WAIT_POLICY": preset})
    assert result["omp_wait_policy"] == expected
    assert result["correct"]
