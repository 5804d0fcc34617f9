"""Thread and worker counts are bounded by the machine; SIGTERM while a model loads ends the command at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.stream.sizing import THREADS_PER_CORE, cores
from tests.helpers import fails_cleanly
from tests.runtime.helpers import ROOT, synthetic_frames, write_video_file


@pytest.mark.parametrize("option", ["--threads", "--infer-workers"])
def test_thread_counts_beyond_the_machine_are_refused_before_anything_starts(
    option: str, tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = write_video_file(tmp_path / "a.mp4", synthetic_frames(2, (48, 64)))
    limit = THREADS_PER_CORE * cores()
    err = fails_cleanly(["stream", str(video), "--model", str(tiny_onnx), option, str(limit + 1)], capsys)
    assert f"{option} {limit + 1} is more than" in err and f"(at most {limit})" in err
    assert sorted(os.listdir(tmp_path)) == ["a.mp4"]
    err = fails_cleanly(["bench", "--models", "unet", "--threads", "10000"], capsys)
    assert "--threads 10000 is more than" in err


LOADER = """
import hashlib, sys
import runtime.backends
from cfnet.cli import main

def slow_open(*args, **kwargs):
    print("loading", flush=True)
    hashlib.pbkdf2_hmac("sha256", b"k", b"s", 10**9)  # minutes inside one C call, as a large model's session
    raise AssertionError("not interrupted")

runtime.backends.open_backend = slow_open
main(sys.argv[1:])
"""


def test_sigterm_while_a_model_loads_ends_the_command_within_seconds(tmp_path: Path) -> None:
    video = write_video_file(tmp_path / "a.mp4", synthetic_frames(2, (48, 64)))
    proc = subprocess.Popen(
        [sys.executable, "-c", LOADER, "stream", str(video), "--model", str(tmp_path / "m.onnx"), "--out",
         str(tmp_path / "o.mp4")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "loading"
        time.sleep(0.3)  # inside the C call now
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "error: interrupted"
        assert time.monotonic() - sent < 5  # not when the load would have finished (minutes)
    finally:
        proc.kill()
        proc.wait()
