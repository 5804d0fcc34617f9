"""Streams added and removed while a run goes on (`runtime.stream.control`): sources files, the control API that
the live view serves, SIGHUP's reload."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from runtime.backends import open_backend
from runtime.errors import UserError
from runtime.stream import RunStats, StreamControl, read_sources, run_streams
from tests.runtime.helpers import read_video, synthetic_frames, write_video_file
from tests.runtime.stream.helpers import StreamProcess


def test_a_sources_file_names_its_streams(tmp_path: Path) -> None:
    (tmp_path / "cams").mkdir()
    sources = tmp_path / "cams" / "sources.txt"
    sources.write_text(
        "# the yard\n"
        "rtsp://10.0.0.5:554/live name=yard   # a comment\n"
        "\n"
        "'door video.mp4'\n"
        "/abs/door.mp4\n"
        "0\n"
        "name=gate http://10.0.0.6/video\n"
    )
    lines = read_sources(sources)
    assert [(s.source, s.name, s.line) for s in lines] == [
        ("rtsp://10.0.0.5:554/live", "yard", 2),
        (str(tmp_path / "cams" / "door video.mp4"), "door video", 4),  # relative to the file's folder
        ("/abs/door.mp4", "door", 5),
        ("0", "camera0", 6),
        ("http://10.0.0.6/video", "gate", 7),
    ]
    sources.write_text("a.mp4\na.mp4\nb.mp4 name=a-2\n")  # derived names never take an explicit one
    assert [s.name for s in read_sources(sources)] == ["a", "a-3", "a-2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.mp4\nb.mp4 c.mp4\n", "bad line in the sources file: expected SOURCE [name=NAME] ({f}:2)"),
        ("a.mp4 name=x\nb.mp4 name=x\n", "duplicate stream name 'x' (also on line 1) ({f}:2)"),
        ("a.mp4 name=../x\n", "bad stream name '../x' (letters, digits, _ . - only, not starting with .) ({f}:1)"),
        ("'a.mp4\n", "bad line in the sources file: No closing quotation ({f}:1)"),
    ],
)
def test_a_bad_sources_file_is_one_line_naming_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    sources = tmp_path / "sources.txt"
    sources.write_text(text)
    with pytest.raises(UserError) as raised:
        read_sources(sources)
    assert str(raised.value) == message.format(f=sources)


def test_streams_are_added_and_removed_through_the_control_api(tiny_onnx: Path, tmp_path: Path) -> None:
    long = write_video_file(tmp_path / "long.mp4", synthetic_frames(30, (48, 64)))
    sources = tmp_path / "sources.txt"
    sources.write_text(f"{long} name=first\n")
    seen: dict[str, object] = {}

    def drive(stats: RunStats) -> None:
        def work() -> None:
            control = stats.control
            assert isinstance(control, StreamControl)
            try:
                _until(lambda: stats.streams[0].frames > 3)
                seen["listed"] = control.list()
                seen["added"] = control.add(str(long))  # named as stream_names names it, unique
                seen["named"] = control.add(str(long), "second")
                missing = str(tmp_path / "missing.mp4")
                for bad in [(missing, None), (str(long), "second"), ("", None), (str(long), "../x")]:
                    try:
                        control.add(*bad)
                    except UserError as exc:
                        seen.setdefault("refused", []).append(str(exc))  # type: ignore[union-attr]
                try:
                    control.remove("nothing")
                except UserError as exc:
                    seen["unknown"] = str(exc)
                control.remove("first")
                _until(lambda: all(s.frames > 3 for s in stats.streams[1:]))
                seen["after"] = [(s["name"], s["state"]) for s in control.list()]
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # the run lasts until stopped: it has a sources file

        threading.Thread(target=work, daemon=True).start()

    with open_backend(tiny_onnx, device="cpu") as backend:
        result = run_streams([], backend, tmp_path / "out", sources_file=sources, loop=True, on_start=drive)
    assert seen["listed"] == [{"name": "first", "source": str(long), "state": "running", "origin": "file"}]
    assert (seen["added"], seen["named"]) == ("long", "second")
    assert seen["refused"] == [
        f"video not found ({tmp_path / 'missing.mp4'})",
        "a stream named 'second' is already running (second)",
        "bad source: expected a video path, a camera index or a URL ('')",
        "bad stream name '../x' (letters, digits, _ . - only, not starting with .) (name)",
    ]
    assert seen["unknown"] == "unknown stream (nothing)"
    assert seen["after"] == [("long", "running"), ("second", "running")]
    first, added, second = result.streams
    assert (first.name, first.ended_by, first.state) == ("first", "removed", "ended")
    assert (added.ended_by, second.ended_by) == ("terminated", "terminated")
    for stats in result.streams:  # every output finalised with its frames
        assert stats.output == str(tmp_path / "out" / f"{stats.name}.mp4")
        assert len(read_video(tmp_path / "out" / f"{stats.name}.mp4")[0]) == stats.frames > 0
    assert sorted(os.listdir(tmp_path / "out")) == ["first.mp4", "long.mp4", "second.mp4"]


def _until(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


@pytest.mark.slow
def test_sighup_reloads_the_sources_file_and_a_bad_one_changes_nothing(tiny_onnx: Path, tmp_path: Path) -> None:
    write_video_file(tmp_path / "v.mp4", synthetic_frames(20, (48, 64)))
    sources = tmp_path / "sources.txt"
    sources.write_text("v.mp4 name=a\n")
    out = tmp_path / "out"
    stream = StreamProcess(["--sources", sources, "--model", tiny_onnx, "--out", out, "--loop", "--threads", "1"])
    try:
        _until(lambda: (out / "a.mp4").exists() or any(p.name.startswith(".a.") for p in _files(out)))
        sources.write_text("v.mp4 name=a\nv.mp4 name=b\n")
        stream.process.send_signal(signal.SIGHUP)
        stream.wait_for(lambda e: e.get("event") == "added" and e["stream"] == "b")
        sources.write_text("v.mp4 name=b\n")
        stream.process.send_signal(signal.SIGHUP)
        stream.wait_for(lambda e: e.get("event") == "removed" and e["stream"] == "a")
        _until(lambda: (out / "a.mp4").exists())  # finalised as soon as it ended, while the run goes on
        assert len(read_video(out / "a.mp4")[0]) > 0
        sources.write_text("v.mp4 name=b\nv.mp4 name=c\nbad line here\n")
        stream.process.send_signal(signal.SIGHUP)
        refused = stream.wait_for(lambda e: e.get("event") == "reload refused")
        assert refused["level"] == "warning" and f"({sources}:3)" in refused["message"]
        code, stdout = stream.stop(signal.SIGTERM)
    finally:
        stream.stop(signal.SIGKILL)
    assert code == 0, stream.lines
    summary = next(e for e in stream.lines if e.get("event") == "summary")
    ended = {s["name"]: s["ended_by"] for s in summary["streams"]}
    assert ended == {"a": "removed", "b": "terminated"}  # c never started: the bad file changed nothing
    for s in summary["streams"]:
        assert len(read_video(Path(s["output"]))[0]) == s["frames"]
    assert sorted(os.listdir(out)) == ["a.mp4", "b.mp4"] and stdout == ""  # json logs: the summary is a log line


def _files(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def test_streams_json_summary_names_state_and_health_fields(tiny_onnx: Path, tmp_path: Path) -> None:
    video = write_video_file(tmp_path / "v.mp4", synthetic_frames(3, (48, 64)))
    with open_backend(tiny_onnx, device="cpu") as backend:
        result = run_streams([str(video), str(video)], backend, stall_timeout=7.0)
    stream = result.to_dict()["streams"][1]
    assert {k: stream[k] for k in ("name", "state", "reconnects", "down_seconds", "write_errors", "recording")} == {
        "name": "v-2",
        "state": "ended",
        "reconnects": 0,
        "down_seconds": 0.0,
        "write_errors": {},
        "recording": "off",
    }
    assert result.stall_timeout == 7.0 and result.last_progress is not None and result.last_progress <= time.monotonic()
    assert json.dumps(result.to_dict())  # serialisable


def test_a_sources_file_with_no_source_yet_waits_for_one(tiny_onnx: Path, tmp_path: Path) -> None:
    video = write_video_file(tmp_path / "v.mp4", synthetic_frames(5, (48, 64)))
    sources = tmp_path / "sources.txt"
    sources.write_text("# no camera installed yet\n")

    def drive(stats: RunStats) -> None:
        def work() -> None:
            try:
                time.sleep(0.3)  # the run waits with no stream
                assert stats.control is not None and stats.control.list() == []
                stats.control.add(str(video), "late")
                _until(lambda: bool(stats.streams) and stats.streams[0].ended_by == "end")
            finally:
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=work, daemon=True).start()

    with open_backend(tiny_onnx, device="cpu") as backend:
        result = run_streams([], backend, sources_file=sources, on_start=drive)
    assert [(s.name, s.frames, s.ended_by) for s in result.streams] == [("late", 5, "end")]
    assert result.ended_by == "terminated"
