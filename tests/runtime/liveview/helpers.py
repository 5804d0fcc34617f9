"""Helpers of the live-view tests: a real run over gated sources, a run set by hand with a fake control, HTTP."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from runtime.backends import open_backend
from runtime.errors import UserError
from runtime.liveview import BOUNDARY, LiveView
from runtime.stream import RunStats, StreamStats, run_streams
from tests.runtime.helpers import PALETTE, ListSource, synthetic_frames

SIZE = (96, 128)
FRAMES = 12
GATE = 6


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


IPV6 = pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")


class GatedSource(ListSource):
    """A live-like source: its first `GATE` frames at once, the rest once the test opens the gate."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        super().__init__(frames)
        self.gate = threading.Event()
        self.given = 0

    def read(self) -> np.ndarray | None:
        if self.given == GATE:
            self.gate.wait(30)
        self.given += 1
        return super().read()


class Run:
    """`run_streams` over gated sources in a thread, observed by a started `LiveView`."""

    def __init__(self, model: Path, view: LiveView, sources: int = 2) -> None:
        self.view = view
        self.sources = [GatedSource(synthetic_frames(FRAMES, SIZE, seed=i)) for i in range(sources)]
        self.result: RunStats | None = None
        self.backend = open_backend(model, device="cpu")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = run_streams(self.sources, self.backend, alpha=1.0, on_start=self.view.attach)

    def wait_for_gate(self) -> None:
        """Until every stream has written the frames before its gate."""
        deadline = time.monotonic() + 30
        while not (self.view.run and all(s.frames == GATE for s in self.view.run.streams)):
            assert time.monotonic() < deadline, "the stream did not reach its gate"
            time.sleep(0.02)

    def finish(self) -> RunStats:
        for source in self.sources:
            source.gate.set()
        self.thread.join(30)
        self.backend.close()
        assert self.result is not None
        return self.result


def camera(name: str, source: str | None = None, **fields: Any) -> StreamStats:
    """A live stream's stats as the pipeline keeps them (`fields` set the interface's per-stream state)."""
    return StreamStats(
        source=source or f"rtsp://cams/{name}", output=None, backend="cpu", live=True, size=(48, 64), input_fps=25.0,
        name=name, **fields,
    )  # fmt: skip


def fake_run(*streams: StreamStats) -> RunStats:
    """A running `RunStats` set by hand, as `run_streams` hands it to `on_start` (inference just advanced)."""
    run = RunStats(streams=[], backend="cpu", batch=1, batch_timeout_ms=40.0, stall_timeout=5.0)
    for stats in streams:
        add_stream(run, stats)
    run.started = time.perf_counter()
    run.last_progress = time.monotonic()
    return run


def add_stream(run: RunStats, stats: StreamStats) -> None:
    """A stream joins the run (as the pipeline adds one: every per-stream list grows)."""
    run.latest.append(None)
    run.times.append({})
    run.queued.append(lambda: {"batcher": 0, "writer": 0})
    run.streams.append(stats)


class FakeControl:
    """A `StreamControl` over a fake run: `add` appends a running stream, `remove` ends one; `calls` records them."""

    def __init__(self, run: RunStats) -> None:
        self.run = run
        self.calls: list[tuple[str, ...]] = []

    def list(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "source": s.source, "state": s.state} for s in self.run.streams]

    def add(self, source: str, name: str | None = None) -> str:
        if source.startswith("nothing:"):
            raise UserError("cannot open the source", source)
        name = name or f"cam{len(self.run.streams) + 1}"
        if any(s.name == name for s in self.run.streams):
            raise UserError("a stream of that name exists", name)
        add_stream(self.run, camera(name, source))
        self.calls.append(("add", source, name))
        return name

    def remove(self, name: str) -> None:
        stream = next((s for s in self.run.streams if s.name == name and s.state != "ended"), None)
        if stream is None:
            raise UserError("unknown stream", name)
        stream.state = "ended"
        stream.ended_by = "removed"
        self.calls.append(("remove", name))


def ask(
    url: str, headers: dict[str, Any] | None = None, method: str = "GET", data: bytes | None = None
) -> tuple[int, bytes]:
    """The status and body of a request (an HTTP error is an answer too)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def address(view: LiveView) -> tuple[str, int]:
    """The host and port the view listens on."""
    host, port = view.server.server_address[:2]
    return str(host), int(port)


def raw(view: LiveView, data: bytes) -> bytes:
    """Send `data` as it is on a socket of its own; everything the server answers until it closes or pauses."""
    with socket.create_connection(address(view), timeout=5) as conn:
        conn.sendall(data)
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
        return answer


def mjpeg_frame(url: str) -> np.ndarray:
    """The first JPEG part of a multipart MJPEG response, decoded."""
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        assert r.readline().strip() == f"--{BOUNDARY}".encode()
        headers = {}
        while (line := r.readline().strip()) != b"":
            key, _, value = line.decode().partition(":")
            headers[key.lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        data = r.read(int(headers["content-length"]))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def palette_pixels(image_bgr: np.ndarray, tolerance: int = 24) -> int:
    """How many pixels are within `tolerance` (per channel) of a palette colour."""
    near = np.zeros(image_bgr.shape[:2], bool)
    for r, g, b in PALETTE:
        near |= (np.abs(image_bgr.astype(int) - (b, g, r)) <= tolerance).all(axis=2)
    return int(near.sum())
