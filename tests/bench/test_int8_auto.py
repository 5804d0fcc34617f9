"""`cfnet bench`'s `onnxruntime-int8-auto` row: the autopilot's int8 beside plain int8, scored alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

from bench.runners import AUTO_AGREEMENT, ArtifactCache, int8_target
from cfnet.cli import cli


def test_int8_auto_export_holds_out_a_quarter_of_the_calibration_images(tmp_path: Path) -> None:
    calls: list[dict] = []

    def exporter(model: object, out: Path, **options: object) -> Path:
        calls.append(options)
        return out

    batches = [np.zeros((1, 3, 8, 8), np.float32)] * 8
    cache = ArtifactCache(tmp_path, (8, 8), exporter=exporter, calib_images=lambda: batches)
    cache.onnx(object(), "m", "int8-auto")
    cache.onnx(object(), "m", "int8")
    auto, plain = calls
    assert auto["precision"] == "int8" and auto["min_agreement"] == AUTO_AGREEMENT
    assert (auto["calib_count"], auto["heldout_count"]) == (6, 2)
    assert plain == {"precision": "int8", "int8_target": int8_target("cpu"), "size": (8, 8), "calib_images": batches}


def test_bench_scores_int8_auto_beside_int8(tmp_path: Path) -> None:
    from cfnet.data.synth import synthesize

    data = synthesize(tmp_path / "data", train=4, val=1, size=(32, 64), seed=0)
    out = tmp_path / "report"
    backends = "torch,onnxruntime-int8,onnxruntime-int8-auto"
    options = f"--preset tiny --size 32x64 --backends {backends} --warmup 1 --iters 2 --threads 1".split()
    args = ["bench", "--models", "hrnet", *options, "--data", str(data), "--out", str(out)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {row["backend"]: row for row in json.loads((out / "results.json").read_text())["rows"]}
    for backend in ("onnxruntime-int8", "onnxruntime-int8-auto"):
        assert rows[backend]["status"] == "ok" and rows[backend]["median_ms"] > 0
        assert 0 <= rows[backend]["miou"] <= 1 and 0 < rows[backend]["agreement"] <= 1
    (auto,) = (out / "cache").glob("*-int8-auto-*.onnx")  # keyed by the calibration images, as int8
    props = {p.key: p.value for p in onnx.load(str(auto)).metadata_props}
    plan = json.loads(props["cfnet.precision_plan"])
    assert plan["target"] == AUTO_AGREEMENT and plan["heldout_images"] == 1
    assert "| onnxruntime-int8-auto |" in (out / "report.md").read_text()


def test_autopilot_checks_measure_the_kept_speedup_and_agreement() -> None:
    from bench.report import autopilot_checks

    def row(ms: float, agreement: float | None = None) -> dict:
        return {"median_ms": ms, "agreement": agreement}

    by = {("m", "onnxruntime"): row(100), ("m", "onnxruntime-int8"): row(50)}
    by[("m", "onnxruntime-int8-auto")] = row(55, 0.996)
    lines = autopilot_checks(by)
    assert "keeps 82% of plain int8's speed-up" in lines[0] and "**met**" in lines[0]  # (100/55-1)/(100/50-1)
    assert "99.60%" in lines[1] and "**met**" in lines[1]
    by[("m", "onnxruntime-int8")] = row(120)
    assert "no speed-up to keep" in autopilot_checks(by)[0]
