"""`cfnet bench --streams K` killed leaves none of its `cfnet stream` children running (issue 21 item 7).

The bench's multi-stream comparison runs in a process of its own, with `cfnet stream` replaced by a stand-in
(`sys.executable` there is a shell script): the runs the bench waits for print a summary at once, the K
concurrent ones note their pid and sleep. When all K sleep, the bench is killed by a real signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STREAM = """#!/bin/sh
case "$*" in
  *concurrent-*) echo $$ >> "$PIDS"; exec sleep 120;;
  *) echo '{"aggregate": {"fps": 1, "batch": 1, "workers": 1, "frames": 1, "seconds": 1, "peak_rss_mb": 1,
       "batch_sizes": "1x1"}}';;
esac
"""
BENCH = """
import signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the test runner ignores SIGINT
from bench.streaming import multi_stream
sys.executable = sys.argv[1]
multi_stream(Path("drive.mp4"), "model.onnx", "cpu", 2, Path(sys.argv[2]))
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["KILL", "TERM", "INT"])
def test_the_stream_children_of_a_killed_bench_end_with_it(tmp_path: Path, sig: signal.Signals) -> None:
    stand_in = tmp_path / "cfnet-stream"
    stand_in.write_text(STREAM)
    stand_in.chmod(0o755)
    pids_file = tmp_path / "pids"
    env = {**os.environ, "PIDS": str(pids_file)}
    bench = subprocess.Popen([sys.executable, "-c", BENCH, str(stand_in), str(tmp_path / "out")], env=env,
                             stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(children) < 2 and bench.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            children = [int(line) for line in pids_file.read_text().split()] if pids_file.exists() else []
        assert len(children) == 2 and all(_running(pid) for pid in children), "the concurrent runs did not start"
        bench.send_signal(sig)
        bench.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in children if _running(pid)]
    finally:
        bench.kill()
        bench.wait()
        for pid in children:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie nobody reaped yet has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
