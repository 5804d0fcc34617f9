"""The per-frame record and the JSON-lines writer (file, folder per stream, stdout; whole lines only)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pycocotools.mask as coco
import pytest

from runtime.errors import UserError
from runtime.results import emit
from runtime.results.drift import DriftReading
from runtime.results.emit import JsonLines
from runtime.results.raster import fill_rings
from runtime.results.records import ResultOptions, frame_record, plain

CLASSES = ["road", "car", "sky"]


def _mask() -> np.ndarray:
    mask = np.zeros((6, 8), np.uint8)
    mask[:2] = 2
    mask[3:5, 2:4] = 1
    mask[5, 7] = 1
    return mask


def test_a_record_holds_shares_and_polygon_regions_that_fill_back() -> None:
    mask = _mask()
    record = frame_record(mask, CLASSES, source="a.mp4", stream="a", frame=3, time=0.2, wall_time=1700000000.5)
    assert list(record) == ["source", "stream", "frame", "time", "wall_time", "size", "shares", "regions"]
    assert record["size"] == [6, 8] and record["frame"] == 3 and record["wall_time"] == 1700000000.5
    assert record["shares"] == {"road": round(27 / 48, 6), "car": round(5 / 48, 6), "sky": round(16 / 48, 6)}
    assert [r["area"] for r in record["regions"]["car"]] == [4, 1]
    assert sorted(record["regions"]) == ["car", "road", "sky"]
    parsed = json.loads(json.dumps(plain(record), allow_nan=False))  # lists: what the standard library writes
    written = io.StringIO()
    with contextlib.redirect_stdout(written), JsonLines("-") as out:
        out.write(record)  # arrays: orjson writes them without lists
    assert json.loads(written.getvalue()) == parsed
    for class_id, name in enumerate(CLASSES):
        rings = [ring for r in parsed["regions"][name] for ring in [r["outer"], *r["holes"]]]
        assert np.array_equal(fill_rings(rings, mask.shape), mask == class_id)


def test_rle_none_min_area_and_drift() -> None:
    mask = _mask()
    reading = DriftReading(js=0.1234567, low_share=None, low_excess=None, score=0.1234567, alerting=False)
    record = frame_record(
        mask, CLASSES, source="s", stream="s", frame=0, time=0, options=ResultOptions("rle", min_area=2), drift=reading
    )
    (car,) = record["regions"]["car"]
    decoded = coco.decode({"size": car["rle"]["size"], "counts": car["rle"]["counts"].encode()})
    assert car["area"] == 4 and decoded.sum() == 4 and decoded[3:5, 2:4].all()
    assert record["drift"] == {"js": 0.123457, "low_share": None, "low_excess": None, "score": 0.123457,
                               "alerting": False}
    bare = frame_record(mask, CLASSES, source="s", stream="s", frame=0, time=0, options=ResultOptions("none"))
    assert "regions" not in bare and "drift" not in bare


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"regions": "mesh"}, "polygon, rle, none"), ({"epsilon": -1}, "epsilon -1"), ({"min_area": 0}, "min area"),
     ({"every": 0}, "every 0")],
)
def test_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResultOptions(**kwargs)  # type: ignore[arg-type]


def test_every_nth_frame() -> None:
    options = ResultOptions(every=3)
    assert [f for f in range(10) if options.due(f)] == [0, 3, 6, 9]


def test_one_file_for_every_stream_appends_whole_lines(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "results.jsonl"
    with JsonLines(out) as writer:
        writer.write({"stream": "a", "frame": 0})
        writer.write({"stream": "b", "frame": 0})
    with JsonLines(out) as writer:  # a restarted run continues the file
        writer.write({"stream": "a", "frame": 0})
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"stream": "a", "frame": 0}, {"stream": "b", "frame": 0}, {"stream": "a", "frame": 0}
    ]


def test_a_folder_gets_a_file_per_stream_from_many_threads(tmp_path: Path) -> None:
    writer = JsonLines(f"{tmp_path / 'out'}/")
    threads = [
        threading.Thread(target=lambda s=s: [writer.write({"stream": s, "frame": i}) for i in range(200)])
        for s in ("cam-1", "cam/2")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cam-1.jsonl", "cam_2.jsonl"]
    lines = (tmp_path / "out" / "cam-1.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(200))


def test_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    writer = JsonLines("-")
    writer.write({"stream": "a", "shares": {"road": 0.5}})
    assert capsys.readouterr().out == '{"stream":"a","shares":{"road":0.5}}\n'
    assert writer.path("a") is None


def test_targets_that_cannot_be_written_fail_before_the_first_frame(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        JsonLines(blocker / "out.jsonl")
    with pytest.raises(UserError, match="output folder is a file"):
        JsonLines(f"{blocker}/")
    assert not list(tmp_path.glob("**/*.jsonl"))


def test_a_failed_write_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.jsonl"
    writer = JsonLines(out)
    writer.write({"stream": "a", "frame": 0})
    real_write = os.write
    monkeypatch.setattr(emit.os, "write", lambda fd, data: real_write(fd, data[:5]))  # the disk fills mid-line
    with pytest.raises(UserError, match="cannot write a result line: short write"):
        writer.write({"stream": "a", "frame": 1})
    monkeypatch.setattr(emit.os, "write", real_write)
    writer.write({"stream": "a", "frame": 2})
    writer.close()
    assert [json.loads(line)["frame"] for line in out.read_text().splitlines()] == [0, 2]


def test_nothing_is_created_before_the_first_line(tmp_path: Path) -> None:
    """A run that fails before its first frame leaves no empty file or folder behind."""
    file_target, folder_target = JsonLines(tmp_path / "a" / "b" / "r.jsonl"), JsonLines(f"{tmp_path / 'dir'}/")
    assert list(tmp_path.iterdir()) == []
    file_target.write({"stream": "cam", "frame": 0})
    folder_target.write({"stream": "cam", "frame": 0})
    file_target.close()
    folder_target.close()
    assert (tmp_path / "a" / "b" / "r.jsonl").is_file() and (tmp_path / "dir" / "cam.jsonl").is_file()


def test_a_folder_nobody_may_write_into_is_refused_at_once() -> None:
    """/proc/self/ takes no new files, whoever asks (root included)."""
    for target in ("/proc/self/", "/proc/self/r.jsonl", "/proc/self/new/r.jsonl"):
        with pytest.raises(UserError, match="cannot write into the folder /proc/self"):
            JsonLines(target)
