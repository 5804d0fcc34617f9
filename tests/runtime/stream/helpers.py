"""Helpers of the stream tests: a real RTSP camera on loopback, a small tmpfs standing in for a full disk, a
truncated MP4, and `cfnet stream` as a process whose log lines are read as they come."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import ROOT

RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-gi and gir1.2-gst-rtsp-server-1.0 are installed for it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_rtsp() -> None:
    """Skip, saying why, where GStreamer's RTSP server cannot run (`make test` installs it)."""
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        subprocess.run([SYSTEM_PYTHON, "-c", probe], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        packages = "python3-gi gir1.2-gst-rtsp-server-1.0"
        pytest.skip(f"no GStreamer RTSP server for {SYSTEM_PYTHON} (apt-get install {packages})")


class Camera:
    """`rtsp_server.py` serving `video` in a loop at rtsp://127.0.0.1:PORT/cam, as a process the test kills
    (a camera that drops), stops (SIGSTOP: one that freezes) and starts again on the same port."""

    def __init__(self, video: Path, port: int | None = None) -> None:
        self.video, self.port = video, port or free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Camera:
        cmd = [SYSTEM_PYTHON, str(RTSP_SERVER), "--port", str(self.port), "--video", str(self.video)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "ready" once it listens (EOF if it died)
        if line.strip() != "ready":
            self.kill()
            raise AssertionError(f"the RTSP server did not start: {line}")
        return self

    def kill(self) -> None:
        """SIGKILL, by pid, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        if self.process is not None:
            self.process.communicate(timeout=30)
        self.process = None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `folder` (created), unmounted at the end; skips where mounting is impossible
    (not root, no CAP_SYS_ADMIN in a container)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a full disk here: {done.stderr.decode().strip() or done.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path, leave: int) -> Path:
    """A file that fills the file system of `folder` but `leave` bytes; delete it to make room again."""
    stat = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def faststart(path: Path) -> Path:
    """Move the `moov` box of an MP4 written by OpenCV before its `mdat` (chunk offsets moved with it), as
    streaming tools write them: such a file still opens when its end is cut off."""
    data = path.read_bytes()
    boxes, pos = {}, 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        boxes[kind] = data[pos : pos + size]
        pos += size
    moov = bytearray(boxes[b"moov"])
    shift = len(moov)
    at = moov.find(b"stco")
    entries = struct.unpack(">I", moov[at + 8 : at + 12])[0]
    for i in range(entries):
        o = at + 12 + 4 * i
        moov[o : o + 4] = struct.pack(">I", struct.unpack(">I", moov[o : o + 4])[0] + shift)
    rest = b"".join(v for k, v in boxes.items() if k not in (b"ftyp", b"moov"))
    path.write_bytes(boxes[b"ftyp"] + bytes(moov) + rest)
    return path


class StreamProcess:
    """`python -m cfnet stream ARGS` (`--log-format json`), its stderr's JSON lines collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "cfnet", "stream", *map(str, args), "--log-format", "json"]
        self.process = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[dict[str, Any]] = []
        self.other: list[str] = []
        self.reader = threading.Thread(target=self._collect, daemon=True)
        self.reader.start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                self.lines.append(json.loads(line))
            except json.JSONDecodeError:
                self.other.append(line)

    def wait_for(self, found: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        """The first log line for which `found` holds, waiting up to `timeout` s (fails if the process ends)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = next((line for line in list(self.lines) if found(line)), None)
            if hit is not None:
                return hit
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise AssertionError(f"no such log line; the log: {self.lines} {self.other}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> tuple[int, str]:
        """Signal it (by pid), wait for it: (exit code, stdout)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        stdout, _ = self.process.communicate(timeout=timeout)
        self.reader.join(timeout=5)
        return self.process.returncode, stdout

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]
