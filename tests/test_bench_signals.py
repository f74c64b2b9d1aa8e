"""``convkit bench`` ends cleanly when interrupted or terminated: no worker outlives it and
no partial report is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("how", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 130)])
def test_a_signal_ends_the_run_and_every_worker(tmp_path, how, code):
    output = tmp_path / "report.json"
    bench = subprocess.Popen(
        [sys.executable, "-m", "convkit", "bench", "--backend", "im2col-strided",
         "--case", "n=8,c=32,o=32,hw=56,k=3,p=1", "--min-time", "2", "--repeats", "20",
         "--passes", "1", "--no-progress", "--format", "json", "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # a group of its own, as a shell gives a foreground job
        # and Ctrl-C's default action, which a test run started in the background (where the
        # shell ignores SIGINT, and children inherit that) would otherwise not pass on
        preexec_fn=_default_interrupt,
    )
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while not workers and time.monotonic() < deadline and bench.poll() is None:
        time.sleep(0.2)
        workers = _children(bench.pid)
    assert workers, "the worker process never started"
    time.sleep(1.0)  # inside the worker's measurements
    os.killpg(bench.pid, how)  # what the terminal does for Ctrl-C: the whole foreground group
    start = time.monotonic()
    _, stderr = bench.communicate(timeout=30)
    assert time.monotonic() - start < 10
    assert bench.returncode == code, stderr
    assert "interrupted" in stderr
    assert not any(_alive(pid) for pid in workers)
    assert not output.exists()
    assert not list(tmp_path.iterdir())  # no temporary file left either
