"""convkit.threads(n) and CONVKIT_NUM_THREADS: the pools are read back, inside and after."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import convkit


def pools() -> dict[str, int]:
    """Threads of every pool loaded in this process: BLAS/OpenMP libraries, numba, torch."""
    found = {f"{i['user_api']}:{i['prefix']}": i["num_threads"] for i in threadpool_info()}
    for name in ("numba", "torch"):
        if name in sys.modules:
            found[name] = sys.modules[name].get_num_threads()
    return found


def run_numba_conv() -> None:
    convkit.conv2d(np.ones((1, 2, 6, 6)), np.ones((3, 2, 3, 3)), backend="numba")


def test_threads_holds_blas_and_numba_at_one_inside_the_block() -> None:
    run_numba_conv()  # numba loaded and its threading layer (OpenMP here) launched
    before = pools()
    assert any(k.startswith("blas:") for k in before) and "numba" in before
    with convkit.threads(1):
        inside = pools()
        run_numba_conv()
        assert pools() == inside
    assert inside == dict.fromkeys(before, 1)
    assert pools() == before


def test_blocks_nest_and_each_restores_what_it_found() -> None:
    run_numba_conv()
    before = pools()
    with convkit.threads(1):
        with convkit.threads(2):
            assert pools()["numba"] == min(2, sys.modules["numba"].config.NUMBA_NUM_THREADS)
        assert pools() == dict.fromkeys(before, 1)
    assert pools() == before


def test_restored_after_an_exception() -> None:
    before = pools()
    with pytest.raises(KeyError), convkit.threads(1):
        raise KeyError("inside")
    assert pools() == before


@pytest.mark.parametrize(("n", "error"), [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                          (True, TypeError), ("2", TypeError)])
def test_bad_n_fails_at_the_call(n: object, error: type) -> None:
    with pytest.raises(error, match=r"n \(the number of threads\) must be a positive int"):
        convkit.threads(n)  # type: ignore[arg-type]


FRESH_PROCESS = """
import json, sys, numpy as np, convkit
from threadpoolctl import threadpool_info
out = {"numba_at_import": "numba" in sys.modules}
x, w = np.ones((1, 2, 6, 6)), np.ones((3, 2, 3, 3))
def blas():
    return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
out["blas_before"] = blas()
with convkit.threads(1):
    convkit.conv2d(x, w, backend="numba")  # imports numba inside the block
    import numba
    out["numba_inside"] = numba.get_num_threads()
    out["blas_inside"] = blas()
    convkit.conv2d(x, w, backend="numba")
    out["numba_inside_later"] = numba.get_num_threads()
out["numba_after"] = numba.get_num_threads()
out["numba_pool"] = numba.config.NUMBA_NUM_THREADS
out["blas_after"] = blas()
out["omp_num_threads"] = __import__("os").environ.get("OMP_NUM_THREADS")
print(json.dumps(out))
"""

POOL_VARIABLES = ("CONVKIT_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                  "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def run_python(script: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in POOL_VARIABLES}
    return subprocess.run([sys.executable, "-c", script], env={**clean, **env},
                          capture_output=True, text=True, timeout=300)


def test_numba_imported_inside_a_block_is_held_too() -> None:
    done = run_python(FRESH_PROCESS)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["numba_at_import"] is False
    assert out["numba_inside"] == out["numba_inside_later"] == 1 and out["blas_inside"] == [1]
    assert out["numba_after"] == out["numba_pool"]  # numba's default: its whole pool
    assert out["blas_after"] == out["blas_before"]
    if len(os.sched_getaffinity(0)) > 1:
        assert out["numba_pool"] > 1 and out["blas_before"] != [1]  # the block did something


def test_convkit_num_threads_for_the_whole_process() -> None:
    done = run_python(FRESH_PROCESS.replace("with convkit.threads(1):", "if True:"),
                      CONVKIT_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["numba_at_import"] is False  # applied at import, without importing numba
    assert out["blas_inside"] == out["blas_after"] == [1]
    assert out["numba_inside"] == out["numba_after"] == out["numba_pool"] == 1
    assert out["omp_num_threads"] == "1"  # for pools loaded later and child processes


def test_convkit_num_threads_reaches_torch_imported_later() -> None:
    pytest.importorskip("torch")
    done = run_python("import convkit, torch; print(torch.get_num_threads())",
                      CONVKIT_NUM_THREADS="1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_convkit_num_threads_fails_at_import(value: str) -> None:
    done = run_python("import convkit", CONVKIT_NUM_THREADS=value)
    assert done.returncode != 0
    assert f"CONVKIT_NUM_THREADS must be a positive int (or empty), got {value!r}" in done.stderr


def test_empty_convkit_num_threads_is_unset() -> None:
    done = run_python("import convkit, os; print(os.environ.get('OMP_NUM_THREADS'))",
                      CONVKIT_NUM_THREADS="")
    assert done.returncode == 0 and done.stdout.strip() == "None"


def test_one_blas_thread_holds_blas_at_one_thread_until_the_last_block_ends() -> None:
    """Blocks of several calls overlap (they run in threads of their own): BLAS stays on
    one thread until the last of them ends, in whatever order they end, then gets back its
    thread count."""
    from threadpoolctl import threadpool_limits

    from convkit_backends._blas import one_blas_thread

    def counts() -> list[int]:
        return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]

    if not counts():
        pytest.skip("no BLAS library that threadpoolctl can control")
    with threadpool_limits(2, user_api="blas"):
        before = counts()
        first, second = one_blas_thread(), one_blas_thread()
        first.__enter__()
        assert set(counts()) == {1}
        second.__enter__()
        first.__exit__(None, None, None)  # the first block ends before the second
        assert set(counts()) == {1}
        second.__exit__(None, None, None)
        assert counts() == before
