"""`cfnet bench` end to end on tiny models, 2 rounds: every file is written and the numbers agree."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from cfnet.cli import cli
from tests.runtime.conftest import synthetic_frames, write_video_file

BACKENDS = ("torch", "onnxruntime", "tensorrt")
STREAM_FRAMES = 5


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    folder = tmp_path_factory.mktemp("bench")
    out = folder / "report"
    video = write_video_file(folder / "drive.mp4", synthetic_frames(STREAM_FRAMES))
    args = [
        "bench",
        "--models",
        "hrnet",
        "--preset",
        "tiny",
        "--size",
        "64x64",
        "--stream",
        str(video),
        "--backends",
        ",".join(BACKENDS),
        "--warmup",
        "1",
        "--iters",
        "2",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "results.json").read_text()), result.output


def _rows(result: dict) -> dict[tuple[str, str], dict]:
    return {(row["model"], row["backend"]): row for row in result["rows"]}


def test_every_output_file_is_written(report: tuple[Path, dict, str]) -> None:
    out, result, stdout = report
    for name in ("report.md", "results.csv", "results.json", "latency.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Model | Backend |" in stdout and "| Model | Backend |" in (out / "report.md").read_text()
    assert list((out / "cache").glob("hrnet-tiny-64x64-*.onnx"))
    assert result["machine"]["threads"] == 1 and "torch" in result["machine"]["packages"]
    assert result["command"].startswith("cfnet") and result["date"]
    assert len(result["rows"]) == len(BACKENDS)  # nothing dropped


def test_unavailable_backend_is_listed_with_its_reason(report: tuple[Path, dict, str]) -> None:
    out, result, _ = report
    for model in ("hrnet",):
        row = _rows(result)[(model, "tensorrt")]
        assert row["median_ms"] is None and "tensorrt" in row["status"].lower() and row["status"] != "ok"
    table = (out / "report.md").read_text()
    assert re.search(r"\| hrnet \| tensorrt \|.*tensorrt", table)


def test_speedup_and_gflops_agree_with_the_latencies(report: tuple[Path, dict, str]) -> None:
    _, result, _ = report
    rows = _rows(result)
    measured = [row for row in result["rows"] if row["status"] == "ok"]
    assert {row["backend"] for row in measured} == {"torch", "onnxruntime"}
    for row in measured:
        torch_ms = rows[(row["model"], "torch")]["median_ms"]
        assert row["speedup"] == pytest.approx(torch_ms / row["median_ms"])
        assert row["gflop_per_s"] == pytest.approx(row["gflops"] / (row["median_ms"] / 1e3))
        assert row["images_per_s"] == pytest.approx(1e3 / row["median_ms"])
        assert row["p90_ms"] >= row["median_ms"] > 0


def test_markdown_and_csv_show_the_same_numbers(report: tuple[Path, dict, str]) -> None:
    out, result, _ = report
    lines = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    shown = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[1:]]
    with (out / "results.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(shown) == len(table) == len(result["rows"])
    for cells, row in zip(shown, table, strict=True):
        assert (cells["Model"], cells["Backend"]) == (row["model"], row["backend"])
        if row["status"] != "ok":
            assert cells["Median (ms)"] == "—" and cells["Status"] == row["status"]
            continue
        median, torch_median = float(cells["Median (ms)"]), None
        torch_cells = next(c for c in shown if c["Model"] == cells["Model"] and c["Backend"] == "torch")
        torch_median = float(torch_cells["Median (ms)"])
        # speed-up is the ratio of the latencies shown (within the rounding of what is shown)
        assert float(cells["Speed-up"]) == pytest.approx(torch_median / median, rel=0.01, abs=0.006)
        assert float(cells["Median (ms)"]) == pytest.approx(float(row["median_ms"]), abs=0.006)
        assert float(cells["GFLOP/s"]) == pytest.approx(
            float(row["gflops"]) / (float(row["median_ms"]) / 1e3), rel=2e-3
        )


def test_stream_fps_sits_beside_the_backend_only_fps(report: tuple[Path, dict, str]) -> None:
    out, result, _ = report
    rows = _rows(result)
    served = rows[("hrnet", "onnxruntime")]
    assert served["stream_fps"] > 0 and served["backend_fps"] > 0 and served["stream_note"] is None
    assert rows[("hrnet", "torch")]["stream_fps"] is None and "torch-free" in rows[("hrnet", "torch")]["stream_note"]
    assert rows[("hrnet", "tensorrt")]["stream_fps"] is None
    capture = cv2.VideoCapture(str(out / "streams" / "hrnet-onnxruntime.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == STREAM_FRAMES
    capture.release()
    header = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| Model"))
    assert "Stream FPS" in header and "Backend FPS" in header


def test_an_unreadable_stream_video_is_refused_before_anything_is_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cfnet.cli import main

    video = tmp_path / "broken.mp4"
    video.write_bytes(b"not a video at all" * 64)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "tiny", "--out", str(tmp_path / "out"), "--stream", str(video)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: cannot open video") and "\n" not in err
    assert str(video) in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "nope"], "unknown model 'nope'"),
        (["--backends", "torch,tflite"], "unknown backend 'tflite'"),
        (["--checkpoints", "runs"], "--checkpoints needs --data"),
        (["--size", "512"], "malformed size"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cfnet.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "tiny", "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()
