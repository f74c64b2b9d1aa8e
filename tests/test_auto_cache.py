"""auto's wisdom file: reused by later processes, invalidated by a changed environment, and
never a reason for a convolution to fail (corrupt, unreadable, read-only, full, concurrent)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from auto_fakes import FAST, SLOW, arrays, slow_and_fast

import convkit
from convkit import autotune
from convkit.autotune import keys, store
from convkit.errors import AutotuneWarning

TESTS = Path(__file__).resolve().parent

SCRIPT = """
import json, sys
import numpy as np
import convkit
from convkit.autotune import rules
from convkit.autotune.chooser import chooser
import auto_fakes

rules.TUNE_MIN_FLOPS = 0
fakes = auto_fakes.slow_and_fast(delay=float(sys.argv[2]))
for size in json.loads(sys.argv[1]):
    x, w = auto_fakes.arrays(shape=(1, 3, size, size))
    y = convkit.conv2d(x, w)
    assert np.allclose(y, convkit.conv2d(x, w, backend="naive"))
print(json.dumps({"calls": {n: f.calls["forward"] for n, f in fakes.items()},
                  "stats": dict(chooser.stats)}))
"""


pytestmark = pytest.mark.usefixtures("measuring_auto")


def wisdom(tmp_path) -> dict:
    return json.loads((tmp_path / "cache" / store.FILE_NAME).read_text())


def decisions(tmp_path) -> int:
    return store.count_decisions(wisdom(tmp_path))


def run_script(tmp_path, sizes, delay=0.05) -> subprocess.Popen:
    env = {**os.environ, "CONVKIT_CACHE_DIR": str(tmp_path / "cache"), "CONVKIT_AUTOTUNE": "on",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(sizes), str(delay)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def test_a_second_process_reuses_the_decision_without_timing_or_writing(tmp_path):
    first = finish(run_script(tmp_path, [8]))
    assert first["stats"] == {"tuned": 1} and first["calls"][SLOW] >= 2
    path = tmp_path / "cache" / store.FILE_NAME
    before = (path.stat().st_mtime_ns, path.read_bytes())
    second = finish(run_script(tmp_path, [8]))
    assert second["stats"] == {"stored": 1}
    assert second["calls"] == {SLOW: 0, FAST: 1}  # no timing run: the one real call
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before  # nothing written


def test_concurrent_processes_keep_each_others_decisions(tmp_path):
    processes = [run_script(tmp_path, [8 + 3 * i, 9 + 3 * i, 10 + 3 * i], delay=0.005)
                 for i in range(4)]
    for process in processes:
        assert finish(process)["stats"] == {"tuned": 3}
    assert decisions(tmp_path) == 12  # valid JSON, every process's entries kept
    assert not list((tmp_path / "cache").glob(".wisdom-*"))  # no temporary file left


def tune_once(**kwargs) -> autotune.Explanation:
    x, w = arrays(**kwargs)
    y = convkit.conv2d(x, w)
    np.testing.assert_allclose(y, convkit.conv2d(x, w, backend="naive"), rtol=1e-12, atol=1e-12)
    return autotune.explain(x.shape, w.shape, dtype="float64")


def test_a_version_change_makes_decisions_stale(tmp_path, monkeypatch):
    fakes = slow_and_fast()
    assert tune_once().source == "tuned"
    autotune.forget()
    assert tune_once().source == "stored"
    versions = keys._versions
    monkeypatch.setattr(keys, "_versions", lambda: {**versions(), "numpy": "0.0.0-other"})
    keys.forget_environment()
    autotune.forget()
    fakes[SLOW].calls.clear()
    assert tune_once().source == "tuned"  # measured again
    assert fakes[SLOW].calls["forward"] >= 2
    assert len(wisdom(tmp_path)["environments"]) == 2  # the other environment's kept


def test_a_candidate_upgrade_makes_its_decisions_stale(monkeypatch):
    slow_and_fast()
    assert tune_once().source == "tuned"
    found = keys.candidate_versions
    monkeypatch.setattr(keys, "candidate_versions",
                        lambda names: {**found(names), FAST: "zz-fast-dist 2.0"})
    autotune.forget()
    assert tune_once().source == "tuned"


@pytest.mark.parametrize("content", ["{not json", '{"format": "convkit-wisdom", "vers', "[1, 2]",
                                     '{"format": "convkit-wisdom", "version": 1, '
                                     '"environments": 3}'])
def test_a_corrupt_or_truncated_file_is_ignored_and_replaced(tmp_path, content):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / store.FILE_NAME).write_text(content)
    slow_and_fast()
    with pytest.warns(AutotuneWarning, match="corrupt"):
        assert tune_once().backend == FAST
    assert decisions(tmp_path) == 1  # rewritten, valid
    assert tune_once(shape=(1, 3, 9, 9)).source == "tuned"  # no second warning


def test_an_unreadable_file_warns_once(tmp_path):
    (tmp_path / "cache" / store.FILE_NAME).mkdir(parents=True)  # a directory: cannot be read
    slow_and_fast()
    with pytest.warns(AutotuneWarning, match="cannot read"):
        assert tune_once().backend == FAST
    assert tune_once(shape=(1, 3, 9, 9)).source == "tuned"  # its write fails, unannounced


def test_a_missing_directory_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVKIT_CACHE_DIR", str(tmp_path / "cache" / "deep" / "er"))
    slow_and_fast()
    tune_once()
    assert (tmp_path / "cache" / "deep" / "er" / store.FILE_NAME).is_file()


def test_a_directory_that_cannot_be_created_keeps_decisions_in_memory(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("CONVKIT_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    slow_and_fast()
    with pytest.warns(AutotuneWarning, match="memory only"):
        assert tune_once().backend == FAST
    assert tune_once().source == "tuned"  # remembered in memory
    assert tune_once(shape=(1, 3, 9, 9)).backend == FAST  # no second warning


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_a_read_only_directory(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache").chmod(0o555)
    slow_and_fast()
    try:
        with pytest.warns(AutotuneWarning, match="memory only"):
            assert tune_once().backend == FAST
    finally:
        (tmp_path / "cache").chmod(0o755)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_a_read_only_or_full_file_system(tmp_path, monkeypatch, code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    # EROFS: the temporary file cannot be created; ENOSPC: its data cannot be flushed.
    if code == errno.EROFS:
        monkeypatch.setattr(store.tempfile, "mkstemp", fail)
    else:
        monkeypatch.setattr(store.os, "fsync", fail)
    slow_and_fast()
    with pytest.warns(AutotuneWarning, match=os.strerror(code)):
        assert tune_once().backend == FAST
    assert tune_once(shape=(1, 3, 9, 9)).backend == FAST  # no second warning
    assert not (tmp_path / "cache" / store.FILE_NAME).exists()
    assert not list((tmp_path / "cache").glob(".wisdom-*"))  # the temporary file is gone


def test_clear_empties_the_file_and_the_memo(tmp_path):
    slow_and_fast()
    tune_once()
    tune_once(shape=(1, 3, 9, 9))
    assert autotune.decision_count() == 2
    assert autotune.clear() == 2
    assert not (tmp_path / "cache" / store.FILE_NAME).exists()
    assert autotune.decision_count() == 0
    assert tune_once().source == "tuned"


def test_other_environments_are_kept_up_to_a_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "MAX_ENVIRONMENTS", 2)
    slow_and_fast()
    versions = keys._versions
    for i in range(3):
        monkeypatch.setattr(keys, "_versions", lambda i=i: {**versions(), "numpy": f"v{i}"})
        keys.forget_environment()
        autotune.forget()
        tune_once()
    sections = wisdom(tmp_path)["environments"].values()
    assert sorted(s["versions"]["numpy"] for s in sections) == ["v1", "v2"]  # newest two
