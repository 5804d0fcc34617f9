"""Recordings (`runtime.stream.recording`): rolling segments, retention, and a full disk (a real tmpfs) for one
MP4 and for segments, masks included."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import cv2
import pytest

from runtime.mp4 import sample_count
from runtime.stream.recording import Retention
from tests.runtime.helpers import cfnet, read_video, synthetic_frames, write_video_file
from tests.runtime.stream.helpers import StreamProcess, fill, tmpfs


def segment(folder: Path, stamp: str, size: int, masks: Path | None = None) -> Path:
    """A finalised segment `folder/NAME-stamp.mp4` of `size` bytes (and a mask folder of one file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{folder.name}-{stamp}.mp4"
    path.write_bytes(b"\0" * size)
    if masks is not None:
        (masks / folder.name / path.stem).mkdir(parents=True)
        (masks / folder.name / path.stem / "000000.png").write_bytes(b"\0" * size)
    return path


def test_retention_deletes_the_oldest_segments_of_every_stream_beyond_its_size_and_age(tmp_path: Path) -> None:
    out, masks = tmp_path / "out", tmp_path / "masks"
    now = time.time()
    stamp = lambda hours_ago: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - hours_ago * 3600))  # noqa: E731
    old = segment(out / "cam1", stamp(30), 100, masks)
    a = segment(out / "cam2", stamp(3), 100, masks)
    b = segment(out / "cam1", stamp(2), 100, masks)
    c = segment(out / "cam2", stamp(1), 100, masks)
    other = out / "cam1" / "notes.mp4"  # not a segment's name: never touched
    other.write_bytes(b"\0" * 1000)
    current = masks / "cam1" / f"cam1-{stamp(0)}"  # the segment being written: its masks stay
    current.mkdir()
    (current / "000000.png").write_bytes(b"\0" * 1000)

    deleted = Retention([out, masks], max_bytes=None, max_seconds=24 * 3600).enforce()
    assert sorted(deleted) == sorted([old, masks / "cam1" / old.stem])  # older than a day
    retention = Retention([out, masks], max_bytes=250, max_seconds=None)
    retention.active.add(current)
    deleted = retention.enforce()  # 3 segments x (100 + 100) bytes: the oldest two go, 200 <= 250 is left
    assert sorted(deleted) == sorted([a, masks / "cam2" / a.stem, b, masks / "cam1" / b.stem])
    assert c.exists() and (masks / "cam2" / c.stem).exists() and other.exists() and current.exists()


@pytest.mark.slow
def test_a_full_disk_ends_a_single_mp4_stream_with_outputs_that_agree_with_the_summary(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = write_video_file(tmp_path / "v.mp4", synthetic_frames(400, (120, 160)), 25.0)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        fill(disk, 600_000)  # room for some frames of the MP4 and the masks, not all
        out, masks = disk / "o.mp4", disk / "masks"
        code, stdout, stderr = cfnet(
            ["stream", video, "--model", tiny_onnx, "--out", out, "--save-masks", masks, "--json"], capsys
        )
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert code == 1 and errors in ([f"error: disk full ({out})"], [f"error: disk full ({masks / '000000.png'})"])
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        stream = json.loads(stdout)["streams"][0]
        assert stream["ended_by"] == "error" and stream["write_errors"] == {"disk_full": 1}
        assert 0 < stream["frames"] < 400 and stream["recorded"] == stream["frames"]
        assert sample_count(out) == len(read_video(out)[0]) == stream["frames"]  # finalised: playable, every frame
        assert len(os.listdir(masks)) == stream["frames"]
        assert sorted(os.listdir(disk)) == ["filler", "masks", "o.mp4"]  # no temp file left


@pytest.mark.slow
def test_a_full_disk_pauses_segments_and_masks_until_there_is_room(tiny_onnx: Path, tmp_path: Path) -> None:
    video = write_video_file(tmp_path / "v.mp4", synthetic_frames(50, (120, 160)), 25.0)
    with tmpfs(tmp_path / "disk", "3m") as disk:
        filler = fill(disk, 900_000)
        out, masks = disk / "out", disk / "masks"
        args = [video, "--model", tiny_onnx, "--out", out, "--save-masks", masks, "--segment-seconds", "1", "--loop"]
        stream = StreamProcess([*args, "--threads", "1", "--json"])
        try:
            paused = stream.wait_for(lambda e: e.get("event") == "recording paused")
            assert paused["level"] == "warning" and paused["kind"] == "disk_full" and paused["stream"] == "v"
            time.sleep(1.5)  # still paused: no more warnings, frames still inferred
            filler.unlink()
            stream.wait_for(lambda e: e.get("event") == "recording resumed")
            stream.wait_for(lambda e: e.get("event") == "recording resumed" and len(os.listdir(out / "v")) >= 2)
            code, stdout = stream.stop(signal.SIGTERM)
        finally:
            stream.stop(signal.SIGKILL)
        assert code == 0, stream.lines
        assert len(stream.events("recording paused")) == 1
        summary = json.loads(stdout)["streams"][0]
        assert summary["write_errors"]["disk_full"] >= 1 and summary["recording"] == "on"
        assert summary["frames"] > summary["recorded"] > 0  # frames went on while recording was paused
        segments = sorted((out / "v").iterdir())
        assert [p.name for p in segments if p.name.startswith(".")] == []  # no temp file left
        counts = [len(read_video(p)[0]) for p in segments]
        assert all(counts) and sum(counts) == summary["recorded"] and len(segments) == summary["segments"]
        for path, count in zip(segments, counts, strict=True):  # each segment's masks are its frames
            pngs = sorted(os.listdir(masks / "v" / path.stem))
            assert pngs == [f"{i:06d}.png" for i in range(count)]
            mask = cv2.imread(str(masks / "v" / path.stem / pngs[-1]), cv2.IMREAD_UNCHANGED)
            assert mask is not None and mask.shape == (120, 160)


@pytest.mark.slow
def test_an_mp4_whose_writes_failed_is_never_renamed_into_place(tmp_path: Path) -> None:
    # OpenCV reports no write error: a disk that fills behind the writer's back (another process) gives a file
    # without its index; finish() reads the sample table and refuses it
    from runtime.errors import UserError
    from runtime.video import VideoWriter

    frames = synthetic_frames(60, (240, 320))
    with tmpfs(tmp_path / "disk", "1m") as disk:
        writer = VideoWriter(disk / "o.mp4", 25.0, (240, 320))
        fill(disk, 20_000)
        for frame in frames:  # written without looking at room(): the bytes are dropped
            writer.write(frame)
        with pytest.raises(UserError) as raised:
            writer.finish()
        assert str(raised.value) == f"disk full ({disk / 'o.mp4'})"
        assert sorted(os.listdir(disk)) == ["filler"] and writer.finish() is None
