"""Against a real RTSP camera on loopback (GStreamer's RTSP server, `rtsp_server.py`): a camera that boots after
the box, drops (SIGKILL) and comes back, or freezes (SIGSTOP); the file beside it loses nothing, every segment
decodes with the frames the summary reports."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import read_video, synthetic_frames, write_video_file
from tests.runtime.stream.helpers import Camera, StreamProcess, require_rtsp

pytestmark = pytest.mark.slow


@pytest.fixture
def camera(tmp_path: Path) -> Any:
    require_rtsp()
    clip = write_video_file(tmp_path / "clip.mp4", synthetic_frames(50, (48, 64), seed=5), 25.0)
    cam = Camera(clip)
    yield cam
    cam.kill()


def _until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def segments_of(folder: Path) -> list[int]:
    """Frames of each segment in `folder`, oldest first (every one must decode)."""
    return [len(read_video(p)[0]) for p in sorted(folder.iterdir())]


def test_a_camera_that_boots_late_and_drops_reconnects_while_a_file_loses_nothing(
    tiny_onnx: Path, tmp_path: Path, camera: Camera
) -> None:
    file = write_video_file(tmp_path / "file.mp4", synthetic_frames(30, (48, 64)), 25.0)
    out = tmp_path / "out"
    args = [file, camera.url, "--model", tiny_onnx, "--out", out, "--segment-seconds", "2", "--loop"]
    stream = StreamProcess([*args, "--reconnect-min", "0.2", "--reconnect-max", "1", "--threads", "1", "--json"])
    name = "127.0.0.1-" + str(camera.port) + "-cam"
    try:
        down = stream.wait_for(lambda e: e.get("event") == "down")  # not there yet: tried again and again
        assert down["stream"] == name and "cannot open stream URL" in down["reason"]
        camera.start()
        stream.wait_for(lambda e: e.get("event") == "reconnected")
        time.sleep(1.5)  # frames flow
        camera.kill()  # the camera drops
        stream.wait_for(lambda e: e.get("event") == "down" and e is not down)
        time.sleep(1.0)
        camera.start()  # and comes back
        stream.wait_for(lambda e: len(stream.events("reconnected")) == 2)
        time.sleep(1.5)
        code, stdout = stream.stop(signal.SIGTERM)
    finally:
        stream.stop(signal.SIGKILL)
    assert code == 0, stream.lines
    other, cam = json.loads(stdout)["streams"]
    assert (cam["name"], cam["reconnects"], cam["state"], cam["ended_by"]) == (name, 2, "ended", "terminated")
    assert cam["down_seconds"] > 0 and cam["frames"] > 0
    assert (other["dropped"], other["reconnects"], other["ended_by"]) == (0, 0, "terminated")  # lost no frame but
    # those SIGTERM found on their way: the muxer's queue (4), the reader's and each worker's frame (1 + 2), the
    # writer's queue (4), frames back from a worker before their turn (2) and the one being written
    assert 0 <= other["read"] - other["frames"] <= 4 + 3 + 4 + 2 + 1
    for stats in (other, cam):
        counts = segments_of(out / stats["name"])
        assert sum(counts) == stats["recorded"] == stats["frames"] and len(counts) == stats["segments"]
    assert len(segments_of(out / name)) >= 2  # a new segment after the reconnect


def test_a_frozen_camera_goes_reconnecting_within_the_stall_timeout_and_comes_back(
    tiny_onnx: Path, tmp_path: Path, camera: Camera
) -> None:
    camera.start()
    file = write_video_file(tmp_path / "file.mp4", synthetic_frames(30, (48, 64)), 25.0)
    masks = tmp_path / "masks"
    args = [camera.url, file, "--model", tiny_onnx, "--loop", "--stall-timeout", "1", "--save-masks", masks]
    stream = StreamProcess([*args, "--reconnect-min", "0.2", "--reconnect-max", "0.5", "--threads", "1", "--json"])
    try:
        _until(lambda: len(list((masks / f"127.0.0.1-{camera.port}-cam").glob("*.png"))) >= 10)  # frames flow
        camera.signal(signal.SIGSTOP)  # (the busy file keeps the pipeline from ever waiting for frames)
        down = stream.wait_for(lambda e: e.get("event") == "down")
        camera.signal(signal.SIGCONT)
        stream.wait_for(lambda e: e.get("event") == "reconnected")
        code, stdout = stream.stop(signal.SIGTERM)
    finally:
        stream.stop(signal.SIGKILL)
    assert code == 0 and down["reason"] == "stalled: no frame for 1 s"
    cam, other = json.loads(stdout)["streams"]
    assert cam["reconnects"] == 1 and cam["ended_by"] == "terminated" and other["dropped"] == 0
