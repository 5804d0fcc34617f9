"""Readers that reopen live sources (`runtime.stream.sources`): backoff, outages, stalls found on the run's clock,
sources that come up after the start, truncated files, named pipes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import runtime.stream.pipeline
from runtime.backends import open_backend
from runtime.errors import UserError
from runtime.stream import Reconnect, RunStats, run_streams
from tests.runtime.helpers import (
    ListSource,
    StalledSource,
    WrappedBackend,
    cfnet,
    read_video,
    synthetic_frames,
    write_video_file,
)
from tests.runtime.stream.helpers import faststart

FAST = Reconnect(0.01, 0.05)


def test_reconnect_waits_grow_from_min_to_max_with_jitter() -> None:
    policy = Reconnect(1.0, 30.0)
    waits = [[policy.delay(k) for _ in range(200)] for k in range(8)]
    assert all(1.0 <= w <= 30.0 for row in waits for w in row)
    assert max(waits[0]) <= 2.0 and max(waits[7]) > 20.0  # doubling up to the cap
    assert len({round(w, 6) for w in waits[3]}) > 100  # jittered: cameras that dropped together spread out


class ChunkedCamera(ListSource):
    """A live source that delivers `chunks[0]`, then is lost; each reopening delivers the next chunk (a camera
    that keeps dropping). Reads take `delay` s, as a camera's do."""

    def __init__(self, chunks: list[list[np.ndarray]], delay: float = 0.005) -> None:
        super().__init__(chunks[0], live=True)
        self.chunks, self.delay = chunks[1:], delay

    def read(self) -> np.ndarray | None:
        time.sleep(self.delay)
        return super().read()

    def reopen(self) -> ChunkedCamera:
        if not self.chunks:
            raise UserError("cannot open stream URL", "rtsp://camera/none")
        return ChunkedCamera(self.chunks, self.delay)


def test_a_lost_camera_is_reopened_and_each_connection_records_a_segment(tiny_onnx: Path, tmp_path: Path) -> None:
    chunks = [synthetic_frames(5, (48, 64), seed=k) for k in range(3)]
    file = write_video_file(tmp_path / "file.mp4", synthetic_frames(40, (48, 64), seed=9))
    with open_backend(tiny_onnx, device="cpu") as backend:
        result = run_streams(
            [ChunkedCamera(chunks), str(file)],
            backend,
            tmp_path / "out",
            names=["cam", "file"],
            segment_seconds=3600,
            reconnect=FAST,
            max_frames=15,
        )
    cam, other = result.streams
    assert (cam.reconnects, cam.read, cam.ended_by, cam.state) == (2, 15, "max-frames", "ended")
    assert cam.down_seconds > 0 and cam.frames + cam.dropped == 15
    segments = sorted((tmp_path / "out" / "cam").iterdir())
    assert len(segments) == cam.segments == 3  # one per connection
    assert all(p.name.startswith("cam-") and p.suffix == ".mp4" for p in segments)
    assert sum(len(read_video(p)[0]) for p in segments) == cam.recorded == cam.frames
    assert (other.frames, other.dropped, other.reconnects, other.ended_by) == (15, 0, 0, "max-frames")


def test_without_a_policy_a_lost_camera_ends_its_stream(tiny_onnx: Path) -> None:
    chunks = [synthetic_frames(3, (48, 64)), synthetic_frames(3, (48, 64), seed=1)]
    with open_backend(tiny_onnx, device="cpu") as backend:
        result = run_streams([ChunkedCamera(chunks)], backend)
    assert (result.streams[0].ended_by, result.streams[0].reconnects, result.streams[0].read) == ("source lost", 0, 3)


class SlowBackend(WrappedBackend):
    """Every inference takes 10 ms: a file stream keeps the muxer busy (it never waits for frames)."""

    def infer(self, images: np.ndarray) -> np.ndarray:
        time.sleep(0.01)
        return self.inner.infer(images)


def test_a_stall_is_found_on_the_clock_while_other_streams_keep_the_pipeline_busy(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    # the stall used to be looked for only when the muxer waited for frames, which a busy file never lets it do
    file = write_video_file(tmp_path / "busy.mp4", synthetic_frames(150, (48, 64)))
    stalled = StalledSource(synthetic_frames(2, (48, 64), seed=6), live=True)  # then blocks in read() for 60 s
    seen: list[str] = []
    stats: list[RunStats] = []

    def on_frame(stream: int, index: int, frame: np.ndarray, mask: np.ndarray, blended: np.ndarray) -> None:
        if stream == 1:
            seen.append(stats[0].streams[0].ended_by)

    with open_backend(tiny_onnx, device="cpu") as backend:
        result = run_streams(
            [stalled, str(file)], SlowBackend(backend), stall_timeout=0.3, on_frame=on_frame, on_start=stats.append
        )
    assert result.streams[0].ended_by == "stalled" and result.streams[1].frames == 150
    assert "stalled" in seen  # ended while the file's frames still went through


class StallingCamera(ChunkedCamera):
    """A camera that freezes after its first chunk: its read blocks for 1 s (until FFmpeg's read timeout, which
    the runtime sets to the stall timeout, gives up on a network stream); reopened, it delivers the next chunk."""

    def read(self) -> np.ndarray | None:
        if not self.frames and self.chunks:
            time.sleep(1.0)
            return None
        return super().read()

    def reopen(self) -> ChunkedCamera:
        return ChunkedCamera(self.chunks, self.delay)


def test_a_stalled_camera_goes_reconnecting_at_once_and_is_reopened(tiny_onnx: Path) -> None:
    states: list[str] = []
    camera = StallingCamera([synthetic_frames(3, (48, 64)), synthetic_frames(4, (48, 64), seed=1)])

    def watch(stats: RunStats) -> None:
        def poll() -> None:
            while stats.ended_by == "running" and len(states) < 2000:
                states.append(stats.streams[0].state if stats.streams else "none")
                time.sleep(0.005)

        threading.Thread(target=poll, daemon=True).start()

    with open_backend(tiny_onnx, device="cpu") as backend:
        result = run_streams([camera], backend, stall_timeout=0.3, reconnect=FAST, max_frames=7, on_start=watch)
    cam = result.streams[0]
    assert (cam.reconnects, cam.read, cam.ended_by) == (1, 7, "max-frames") and cam.down_seconds >= 0.0
    assert "reconnecting" in states and states.index("reconnecting") < len(states) - states[::-1].index("running")


class BootingCamera(ListSource):
    """A camera that cannot be opened the first `fails` times (it boots after the box)."""

    attempts = 0

    def __init__(self, spec: str, timeout: float | None = None) -> None:
        type(self).attempts += 1
        if type(self).attempts <= 2:
            raise UserError("cannot open stream URL", spec)
        super().__init__(synthetic_frames(4, (48, 64)), live=True)
        self.name = spec


def test_a_camera_unreachable_at_the_start_is_tried_until_it_comes_up(
    tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runtime.stream.pipeline, "VideoSource", BootingCamera)
    with open_backend(tiny_onnx, device="cpu") as backend:
        result = run_streams(["rtsp://camera/boots"], backend, reconnect=FAST, max_frames=4)
    cam = result.streams[0]
    assert BootingCamera.attempts == 3 and (cam.reconnects, cam.read, cam.size) == (1, 4, (48, 64))
    log = capsys.readouterr().err.splitlines()
    assert log[0] == "warning: camera-boots: cannot open stream URL (rtsp://camera/boots); reconnecting"
    assert log[1].startswith("camera-boots: reconnected after ") and len(log) == 2  # one warning per outage


def test_a_truncated_video_ends_as_truncated_with_a_warning_and_exit_1(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = faststart(write_video_file(tmp_path / "cut.mp4", synthetic_frames(60, (48, 64))))
    whole = video.read_bytes()
    video.write_bytes(whole[: len(whole) * 2 // 3])  # a copy cut short: its index still declares 60 frames
    code, stdout, stderr = cfnet(["stream", video, "--model", tiny_onnx, "--out", tmp_path / "o.mp4"], capsys)
    assert code == 1 and "ended: truncated" in stdout
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "frames its index declares" in warnings[0] and "of the 60" in warnings[0]
    frames = int(stdout.split(" frames")[0])
    assert 0 < frames < 60 and len(read_video(tmp_path / "o.mp4")[0]) == frames
    (tmp_path / "whole.mp4").write_bytes(whole)  # the whole file still ends as "end", exit 0
    code, stdout, _ = cfnet(["stream", tmp_path / "whole.mp4", "--model", tiny_onnx], capsys)
    assert code == 0 and "60 frames" in stdout and "ended: end" in stdout


def test_a_named_pipe_is_a_live_source(tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = tmp_path / "clip.avi"  # AVI reads without seeking: it streams through a pipe
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    for frame in synthetic_frames(12, (48, 64)):
        writer.write(frame)
    writer.release()
    pipe = tmp_path / "camera.pipe"
    os.mkfifo(pipe)

    def feed() -> None:
        with open(pipe, "wb") as f:
            f.write(clip.read_bytes())

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    code, stdout, stderr = cfnet(["stream", pipe, "--model", tiny_onnx, "--no-reconnect", "--json"], capsys)
    feeder.join(timeout=10)
    assert code == 0, stderr
    import json

    stream = json.loads(stdout)["streams"][0]
    assert stream["live"] and stream["ended_by"] == "source lost" and stream["read"] == 12
