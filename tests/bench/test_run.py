"""`cfnet bench` end to end on tiny models, 2 rounds: every file is written and the numbers agree."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from cfnet.cli import cli
from tests.runtime.helpers import synthetic_frames, write_video_file

BACKENDS = ("torch", "onnxruntime", "tensorrt", "triton")
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
        "--streams",
        "2",
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


def frame_count(video: Path) -> int:
    capture = cv2.VideoCapture(str(video))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def table_header(out: Path) -> str:
    return next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| Model"))


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
    assert {row["backend"] for row in measured} == {"torch", "onnxruntime", "triton"}
    for row in measured:
        torch_ms = rows[(row["model"], "torch")]["median_ms"]
        assert row["speedup"] == pytest.approx(torch_ms / row["median_ms"])
        assert row["gflop_per_s"] == pytest.approx(row["gflops"] / (row["median_ms"] / 1e3))
        assert row["images_per_s"] == pytest.approx(1e3 / row["median_ms"])
        assert row["p90_ms"] >= row["median_ms"] > 0


def test_markdown_and_csv_show_the_same_numbers(report: tuple[Path, dict, str]) -> None:
    out, result, _ = report
    main_table = (out / "report.md").read_text().split("## Multi-stream")[0]
    lines = [line for line in main_table.splitlines() if line.startswith("| ")]
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
    assert frame_count(out / "streams" / "hrnet-onnxruntime.mp4") == STREAM_FRAMES
    header = table_header(out)
    assert "Stream FPS" in header and "Backend FPS" in header


def test_streams_compare_one_pipeline_with_sequential_runs_and_concurrent_processes(
    report: tuple[Path, dict, str],
) -> None:
    out, result, _ = report
    row = _rows(result)[("hrnet", "onnxruntime")]
    assert row["streams_k"] == 2 and row["streams_frames"] == 2 * STREAM_FRAMES
    assert (row["streams_pipeline_batch"], row["streams_pipeline_workers"]) == (1, 2)  # on a CPU
    for variant in ("pipeline", "batched", "sequential", "concurrent"):
        assert row[f"streams_{variant}_fps"] > 0 and row[f"streams_{variant}_rss_mb"] > 50  # python + ORT + cv2
    assert row["streams_vs_concurrent"] == pytest.approx(row["streams_pipeline_fps"] / row["streams_concurrent_fps"])
    assert row["streams_rss_vs_concurrent"] < 1.0  # one model loaded, not two
    sizes = dict(item.split("x")[::-1] for item in row["streams_batch_sizes"].split(", "))
    assert sum(int(size) * int(n) for size, n in sizes.items()) == 2 * STREAM_FRAMES
    folder = out / "streams" / "hrnet-onnxruntime-x2"
    for variant in ("pipeline", "batched"):
        assert sorted(p.name for p in (folder / variant).iterdir()) == ["drive-2.mp4", "drive.mp4"]
    for name in ("sequential-0.mp4", "sequential-1.mp4", "concurrent-0.mp4", "concurrent-1.mp4"):
        capture = cv2.VideoCapture(str(folder / name))
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == STREAM_FRAMES
        capture.release()
    section = (out / "report.md").read_text().split("## Multi-stream")[1]
    assert "| hrnet | onnxruntime |" in section and f"| {row['streams_batch_sizes']} |" in section


def test_streams_need_a_stream_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cfnet.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "tiny", "--out", str(tmp_path / "out"), "--streams", "2"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: --streams K needs K >= 1 and --stream VIDEO")


def test_the_triton_row_serves_frames_to_masks(report: tuple[Path, dict, str]) -> None:
    """A real Triton server: the stream ran through it, frames went in as 64x64x3 bytes and came back as 64x64."""
    out, result, _ = report
    rows = _rows(result)
    served = rows[("hrnet", "triton")]
    assert served["status"] == "ok" and served["stream_fps"] > 0
    assert served["serve_bytes_sent"] == 64 * 64 * 3 and served["serve_bytes_received"] == 64 * 64
    assert served["serve_streams"] == 4 and served["serve_avg_batch"] >= 1.0
    assert served["serve_p90_ms"] >= served["serve_p50_ms"] > 0
    assert served["serve_fps_1"] > 0 and served["serve_fps_n"] > 0
    assert rows[("hrnet", "onnxruntime")]["serve_fps_1"] is None
    assert frame_count(out / "streams" / "hrnet-triton.mp4") == STREAM_FRAMES
    header = table_header(out)
    assert "Serve FPS N streams" in header and "Bytes/frame received" in header


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
        (["--images", "0"], "--images must be >= 1"),
        (["--threads", "0"], "'--threads': 0 is not in the range x>=1"),
        (["--models", ""], "nothing to measure"),
        (["--backends", " , "], "nothing to measure"),
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


class Validated(Exception):
    """Raised in place of the measurement once a bench configuration has passed validation."""


def _readme_bench_with_checkpoints() -> list[str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = readme.replace("\\\n", " ").splitlines()
    command = next(line for line in lines if line.startswith("cfnet bench") and "--checkpoints" in line)
    return command.split()[1:]


def test_the_readme_checkpoint_example_holds_on_the_demo_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cfnet demo --out demo` leaves checkpoints of the models it trains; the README's example must name only
    those (it named none, so every zoo model: `no checkpoint for unet`)."""
    import bench.run
    from bench.demo import MODELS

    demo = tmp_path / "demo"
    (demo / "checkpoints").mkdir(parents=True)
    for name in MODELS:  # as `bench.demo._bench` leaves them
        (demo / "checkpoints" / f"{name}.pt").write_bytes(b"checkpoint")
    (demo / "data").mkdir()
    write_video_file(demo / "video.mp4", synthetic_frames(2))

    def validate_only(config: bench.run.BenchConfig, **_: object) -> None:
        bench.run._validate(config)
        raise Validated(config.models)

    monkeypatch.setattr(bench.run, "run_bench", validate_only)
    monkeypatch.chdir(tmp_path)
    args = _readme_bench_with_checkpoints()
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, Validated), result.output
    assert set(result.exception.args[0]) <= set(MODELS)
    without_models = [a for i, a in enumerate(args) if "--models" not in (a, args[i - 1])]
    result = CliRunner().invoke(cli, without_models)
    assert "no checkpoint for unet" in str(result.exception) and "--models" in str(result.exception)


def test_a_fused_models_branch_is_benched_from_the_fused_checkpoint(tmp_path: Path) -> None:
    """`cfnet-pspnet:transformer` with --checkpoints reads `cfnet-pspnet.pt` (it looked for
    `cfnet-pspnet:transformer.pt` and refused the documented command)."""
    import bench.run
    from bench.run import BenchConfig
    from cfnet.errors import UserError

    (tmp_path / "cfnet-pspnet.pt").write_bytes(b"checkpoint")
    config = BenchConfig(models=("cfnet-pspnet", "cfnet-pspnet:transformer"), preset="tiny", size=(32, 32),
                         backends=("onnxruntime",), checkpoints=tmp_path, data=tmp_path, out=tmp_path / "out",
                         command="test")
    bench.run._validate(config)
    with pytest.raises(UserError, match="no checkpoint for cfnet-hrnet"):
        bench.run._validate(replace(config, models=("cfnet-hrnet:transformer",)))


def test_an_accuracy_failure_marks_the_row_and_keeps_its_timing() -> None:
    from bench.run import _row
    from bench.timing import Timing

    info = {"model": "m", "params_m": 1.0, "gflops": 2.0, "paper_params_m": None, "paper_time_s": None,
            "paper_miou": None}
    timings = {"tensorrt": Timing((0.01, 0.01))}
    accuracy = {"tensorrt": {"miou": None, "agreement": None, "error": "accuracy failed: too big"}}
    row = _row(info, "tensorrt", timings, {}, accuracy, {}, {}, {})
    assert row["status"] == "timed; accuracy failed: too big" and row["median_ms"] == pytest.approx(10.0)
    assert row["miou"] is None


def test_the_split_image_sizes_come_from_the_png_headers(tmp_path: Path) -> None:
    from bench.run import _image_sizes
    from cfnet.data.cityscapes import CityscapesDataset
    from cfnet.data.synth import synthesize

    data = synthesize(tmp_path / "data", train=1, val=2, size=(40, 72), seed=0)
    assert _image_sizes(CityscapesDataset(data, "val"), None) == [(40, 72)]


def test_a_backend_that_fails_on_the_split_marks_its_row_and_the_bench_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a TensorRT engine whose profile is smaller than the split's images: timing works at the bench size,
    the accuracy step's full-size images fail. Before, the exception ended the whole bench (exit 2)."""
    import numpy as np

    import bench.run
    from bench.run import BenchConfig, run_bench
    from cfnet.data.synth import synthesize

    real_open = bench.run.open_runner

    class ProfileLimited:
        def __init__(self, runner: object) -> None:
            self.runner, self.name = runner, "onnxruntime"

        def infer(self, images: np.ndarray) -> np.ndarray:
            if images.shape[-2:] != (32, 32):
                raise RuntimeError(f"input {images.shape[-2]}x{images.shape[-1]} exceeds the engine's profile")
            return self.runner.infer(images)  # type: ignore[attr-defined]

        def close(self) -> None:
            self.runner.close()  # type: ignore[attr-defined]

    def open_runner(backend: str, *args: object) -> object:
        runner = real_open(backend, *args)  # type: ignore[arg-type]
        return ProfileLimited(runner) if backend == "onnxruntime" else runner

    monkeypatch.setattr(bench.run, "open_runner", open_runner)
    data = synthesize(tmp_path / "data", train=0, val=2, size=(64, 96), seed=0)
    config = BenchConfig(models=("segformer",), preset="tiny", size=(32, 32), backends=("torch", "onnxruntime"),
                         warmup=0, iters=2, threads=1, data=data, out=tmp_path / "out", command="test")
    rows = {row["backend"]: row for row in run_bench(config, progress=lambda _: None)["rows"]}
    assert rows["torch"]["status"] == "ok" and rows["torch"]["miou"] is not None
    assert rows["onnxruntime"]["status"] == "timed; accuracy failed: input 64x96 exceeds the engine's profile"
    assert rows["onnxruntime"]["median_ms"] > 0 and rows["onnxruntime"]["miou"] is None
