"""Results as data through `cfnet stream`, `cfnet segment` and `run_stream(s)` (issue 24): the JSON lines fill
back to the very masks the stream saved, smoothing in the stream is the smoother's, drift figures and warnings,
the same lines from a logits and an in-graph-argmax model, and a full disk that loses lines but no frame."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pycocotools.mask as coco
import pytest

from export.mask import write_mask_variant
from runtime.backends import open_backend
from runtime.postprocess import postprocess
from runtime.preprocess import FrameInfo, preprocess
from runtime.results.emit import JsonLines, WriteFailed
from runtime.results.raster import fill_rings
from runtime.results.records import ResultOptions
from runtime.results.reference import ReferenceBuilder
from runtime.results.smoothing import EmaSmoother, VoteSmoother, parse_smoothing
from runtime.results.stage import ResultsConfig
from runtime.stream import StreamStats, run_stream, run_streams
from runtime.stream.results import RunResults
from runtime.stream.state import Frame
from tests.helpers import fails_cleanly
from tests.runtime.helpers import CLASSES, cfnet, read_video, synthetic_frames

FPS = 6.0


@pytest.fixture
def video(tmp_path: Path, write_video: Callable[..., Path]) -> Path:
    return write_video(tmp_path / "drive.mp4", synthetic_frames(8, (60, 90)), fps=FPS)


def with_reference(model: Path, out: Path, frames: list[np.ndarray]) -> Path:
    """`model` with a `cfnet.reference` made from its own logits on `frames` (as the export makes it)."""
    builder = ReferenceBuilder(len(CLASSES))
    with open_backend(model, device="cpu") as backend:
        for frame in frames:
            batch, infos = preprocess(frame, backend.metadata)
            builder.add(backend.infer(batch)[0][:, : infos[0].resized_size[0], : infos[0].resized_size[1]])
    proto = onnx.load(str(model))
    proto.metadata_props.add(key="cfnet.reference", value=builder.build().to_json())
    onnx.save(proto, str(out))
    return out


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def saved_masks(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))]


def test_each_frame_is_a_line_whose_exact_polygons_fill_back_to_the_saved_mask(
    tiny_onnx: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, masks = tmp_path / "results.jsonl", tmp_path / "masks"
    code, _, err = cfnet(["stream", video, "--model", tiny_onnx, "--emit", out, "--save-masks", masks], capsys)
    assert code == 0
    assert err.count("note: the model has no cfnet.reference: no drift figures") == 1  # said once
    records, saved = lines_of(out), saved_masks(masks)
    assert len(records) == len(saved) == 8
    assert [r["frame"] for r in records] == list(range(8))
    assert [r["time"] for r in records] == [round(i / FPS, 6) for i in range(8)]
    classes_seen = set()
    for record, mask in zip(records, saved, strict=True):
        assert (record["source"], record["stream"], record["size"]) == (str(video), "drive", [60, 90])
        assert list(record["shares"]) == CLASSES and "drift" not in record
        for c, name in enumerate(CLASSES):
            assert record["shares"][name] == pytest.approx(np.mean(mask == c), abs=1e-6)
            filled = np.zeros(mask.shape, bool)
            for region in record["regions"].get(name, []):
                filled |= fill_rings([region["outer"], *region["holes"]], mask.shape).astype(bool)
            np.testing.assert_array_equal(filled, mask == c)  # exact, class by class
        classes_seen |= set(record["regions"])
    assert len(classes_seen) > 1


def test_rle_every_other_frame_and_min_area_decode_to_the_saved_masks(
    tiny_onnx: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, masks = tmp_path / "results.jsonl", tmp_path / "masks"
    args = ["stream", video, "--model", tiny_onnx, "--emit", out, "--save-masks", masks, "--regions", "rle"]
    assert cfnet([*args, "--emit-every", "2", "--min-area", "5"], capsys)[0] == 0
    records, saved = lines_of(out), saved_masks(masks)
    assert [r["frame"] for r in records] == [0, 2, 4, 6]
    for record in records:
        mask = saved[record["frame"]]
        for c, name in enumerate(CLASSES):
            count, labels, stats, _ = cv2.connectedComponentsWithStats((mask == c).view(np.uint8), connectivity=8)
            expected = np.isin(labels, [k for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= 5])
            decoded = np.zeros(mask.shape, bool)
            for region in record["regions"].get(name, []):
                assert region["area"] >= 5
                decoded |= coco.decode(region["rle"]).astype(bool)
            np.testing.assert_array_equal(decoded, expected)  # bit for bit, specks under 5 pixels dropped


def test_a_folder_gets_a_file_per_stream_and_dash_leaves_stdout_to_the_lines(
    tiny_onnx: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = tmp_path / "rear.mp4"
    second.write_bytes(video.read_bytes())
    out = tmp_path / "results"
    args = ["stream", video, second, "--model", tiny_onnx, "--emit", f"{out}/", "--regions", "none"]
    assert cfnet(args, capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["drive.jsonl", "rear.jsonl"]
    for name in ("drive", "rear"):
        assert [(r["stream"], r["frame"]) for r in lines_of(out / f"{name}.jsonl")] == [(name, i) for i in range(8)]
    code, stdout, err = cfnet(["stream", video, "--model", tiny_onnx, "--emit", "-", "--regions", "none"], capsys)
    assert code == 0 and "frames (0 dropped" in err  # the summary went to stderr
    assert [json.loads(line)["frame"] for line in stdout.splitlines()] == list(range(8))


def test_smoothing_in_the_stream_is_the_smoother_over_the_model_outputs(
    tiny_onnx: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames, _ = read_video(video)
    with open_backend(tiny_onnx, device="cpu") as backend:
        outputs = [(backend.infer(b), i) for b, i in (preprocess(f, backend.metadata) for f in frames)]
    plain = [postprocess(out, infos)[0] for out, infos in outputs]
    ema, vote = EmaSmoother(0.3), VoteSmoother(3, len(CLASSES))
    expected = {
        "ema:0.3": [postprocess(ema.update(out[0])[None], infos)[0] for out, infos in outputs],
        "vote:3": [vote.update(mask).copy() for mask in plain],
    }
    for spec, masks in expected.items():
        folder = tmp_path / spec.replace(":", "-")
        args = ["stream", video, "--model", tiny_onnx, "--save-masks", folder, "--smooth", spec]
        assert cfnet(args, capsys)[0] == 0
        got = saved_masks(folder)
        for a, b in zip(got, masks, strict=True):
            np.testing.assert_array_equal(a, b)
        assert any((a != b).any() for a, b in zip(got, plain, strict=True))  # the smoothing changed something


def test_the_python_api_hands_on_result_the_emitted_dicts(tiny_onnx: Path, video: Path, tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []
    config = ResultsConfig(options=ResultOptions("rle", every=3))
    with open_backend(tiny_onnx, device="cpu") as backend:
        stats = run_stream(video, backend, results=config, emit=tmp_path / "r.jsonl", on_result=got.append)
        several: list[dict[str, Any]] = []
        run_streams([str(video), str(video)], backend, results=config, on_result=several.append)
    assert [r["frame"] for r in got] == [0, 3, 6] and "rle" in next(iter(got[0]["regions"].values()))[0]
    assert lines_of(tmp_path / "r.jsonl") == json.loads(json.dumps(got))
    assert list(stats.shares) == CLASSES and sum(stats.shares.values()) == pytest.approx(1, abs=1e-5)
    assert stats.drift is None  # no reference in the model
    expected = [(s, f) for s in ("drive", "drive-2") for f in (0, 3, 6)]
    assert sorted((r["stream"], r["frame"]) for r in several) == expected


def test_a_logits_and_an_in_graph_argmax_model_give_the_same_lines(
    tiny_onnx: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Acceptance (issue 24), without a server: Triton's run is in tests/runtime/triton/test_results_triton.py."""
    mask_model = write_mask_variant(tiny_onnx, tmp_path / "tiny-mask.onnx")
    lines = {}
    for name, model in (("logits", tiny_onnx), ("mask", mask_model)):
        out = tmp_path / f"{name}.jsonl"
        args = ["stream", video, "--model", model, "--emit", out, "--smooth", "vote:3", "--epsilon", "0.5"]
        assert cfnet(args, capsys)[0] == 0
        lines[name] = [{k: v for k, v in r.items() if k != "wall_time"} for r in lines_of(out)]
    assert len(lines["logits"]) == 8 and lines["logits"] == lines["mask"]
    err = fails_cleanly(["stream", str(video), "--model", str(mask_model), "--smooth", "ema:0.5"], capsys)
    assert "ema:0.5 reads class scores; this model outputs masks only (--smooth vote:K)" in err


def test_drift_figures_in_lines_stats_and_one_warning_per_episode(
    tiny_onnx: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames, _ = read_video(video)
    model = with_reference(tiny_onnx, tmp_path / "ref.onnx", frames)
    out = tmp_path / "r.jsonl"
    code, stdout, err = cfnet(["stream", video, "--model", model, "--emit", out, "--regions", "none", "--json"], capsys)
    assert code == 0 and "note:" not in err and "warning:" not in err  # its own video: below the default alert
    records = lines_of(out)
    assert all(0 <= r["drift"]["score"] < 0.2 and r["drift"]["alerting"] is False for r in records)
    assert records[-1]["drift"]["low_share"] is not None  # logits: the confidence part too
    summary = json.loads(stdout)["streams"][0]
    assert summary["drift"] == records[-1]["drift"] and summary["shares"] == records[-1]["shares"]
    dark = tmp_path / "night.mp4"
    writer = cv2.VideoWriter(str(dark), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (90, 60))
    for frame in frames * 3:
        writer.write((frame * 0.2).astype(np.uint8))
    writer.release()
    args = ["stream", dark, "--model", model, "--emit", out, "--regions", "none", "--drift-window", "1"]
    code, _, err = cfnet(args, capsys)  # the default alert, 0.2
    assert code == 0 and err.count("warning: night: drift score") == 1  # once per episode
    shifted = lines_of(out)[8:]
    assert min(r["drift"]["score"] for r in shifted) > max(0.2, 3 * max(r["drift"]["score"] for r in records))
    assert shifted[-1]["drift"]["alerting"] is True
    code, _, err = cfnet([*args, "--drift-alert", "0.95"], capsys)  # a threshold above the score: no warning
    assert code == 0 and "warning:" not in err and lines_of(out)[-1]["drift"]["alerting"] is False


def test_a_line_that_cannot_be_written_is_counted_and_the_stream_goes_on(
    tiny_onnx: Path, video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(self: JsonLines, record: dict[str, Any]) -> None:
        raise WriteFailed("cannot write a result line: No space left on device", "--emit r.jsonl", errno.ENOSPC)

    monkeypatch.setattr(JsonLines, "write", full)
    with open_backend(tiny_onnx, device="cpu") as backend:
        stats = run_stream(video, backend, emit=tmp_path / "r.jsonl")
    assert stats.frames == 8 and stats.ended_by == "end" and stats.write_errors == {"disk_full": 8}
    assert capsys.readouterr().err.count("warning: drive: result lines are being lost") == 1


def test_segment_writes_a_record_per_image(tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i, frame in enumerate(synthetic_frames(2, (60, 90))):
        cv2.imwrite(str(images / f"street{i}.png"), frame)
    out = tmp_path / "seg"
    code, stdout, err = cfnet(["segment", images, "--model", tiny_onnx, "--out", out, "--emit", "-"], capsys)
    assert code == 0 and "street0.png ->" in err  # stdout holds the lines only
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [(r["stream"], r["frame"], r["time"]) for r in records] == [("street0", 0, 0.0), ("street1", 0, 0.0)]
    for record in records:
        mask = cv2.imread(str(out / f"{record['stream']}_mask.png"), cv2.IMREAD_UNCHANGED)
        for c, name in enumerate(CLASSES):
            rings = [ring for r in record["regions"].get(name, []) for ring in (r["outer"], *r["holes"])]
            np.testing.assert_array_equal(fill_rings(rings, mask.shape).astype(bool), mask == c)


def test_a_new_connection_starts_the_smoothing_afresh_and_live_time_counts_from_the_first_frame(
    tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got: list[dict[str, Any]] = []
    with open_backend(tiny_onnx, device="cpu") as backend:
        config = ResultsConfig(ResultOptions("none"), smooth=parse_smoothing("vote:3"))
        run = RunResults(config, backend, on_result=got.append)
    stats = StreamStats(source="rtsp://cam/live", output=None, backend="b", live=True, size=(4, 8), input_fps=25.0)
    frames = run.for_stream("cam", "rtsp://cam/live", stats, 25.0, live=True)
    info = FrameInfo(frame_size=(4, 8), resized_size=(4, 8), input_size=(4, 8))
    image = np.zeros((4, 8, 3), np.uint8)

    def frame(index: int, label: int, started: float) -> Frame:
        mask = np.full((1, 4, 8), label, np.uint8)  # a mask model's output
        return Frame(0, index, image, started, np.zeros((1, 3, 4, 8), np.float32), info, output=mask)

    labels = [int(frames.mask(frame(i, label, 100.0 + i))[0, 0]) for i, label in enumerate((0, 0, 2))]
    assert labels == [0, 0, 0]  # voted: two of the last three masks say 0
    assert int(frames.mask(frame(3, 2, 103.5), connection=1)[0, 0]) == 2  # reconnected: no past to vote with
    assert [r["time"] for r in got] == [0.0, 1.0, 2.0, 3.5]  # since the first frame, not by index / fps
    assert stats.shares == {"road": 0.0, "car": 0.0, "sky": 1.0, "tree": 0.0}
    assert "note: the model has no cfnet.reference" in capsys.readouterr().err
