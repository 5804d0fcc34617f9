"""`cfnet bench`: the end-to-end frame cost and the bytes returned per frame, for every backend, and the `+mask`
backends (in-graph argmax) beside their logits rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cfnet.cli import cli

BACKENDS = ("torch", "onnxruntime", "onnxruntime+mask", "tensorrt+mask")
SIZE = (64, 96)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench") / "report"
    args = ["bench", "--models", "hrnet", "--preset", "tiny", "--size", f"{SIZE[0]}x{SIZE[1]}", "--backends",
            ",".join(BACKENDS), "--warmup", "1", "--iters", "2", "--threads", "1", "--out", str(out)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "results.json").read_text())


def test_every_backend_has_a_frame_cost_and_the_bytes_it_returns(report: tuple[Path, dict]) -> None:
    out, result = report
    rows = {row["backend"]: row for row in result["rows"]}
    logits_bytes = 19 * SIZE[0] * SIZE[1] * 4
    assert rows["torch"]["bytes_per_frame"] == rows["onnxruntime"]["bytes_per_frame"] == logits_bytes
    assert rows["onnxruntime+mask"]["bytes_per_frame"] == SIZE[0] * SIZE[1]
    for backend in ("torch", "onnxruntime", "onnxruntime+mask"):
        assert rows[backend]["status"] == "ok" and rows[backend]["frame_ms"] > 0
    skipped = rows["tensorrt+mask"]
    assert skipped["status"] != "ok" and skipped["frame_ms"] is None and skipped["bytes_per_frame"] is None
    table = (out / "report.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| Model"))
    assert "Frame (ms)" in header and "Returned (B/frame)" in header
    assert f"| {logits_bytes:,d} |" in table and f"| {SIZE[0] * SIZE[1]:,d} |" in table
    ratio = rows["onnxruntime+mask"]["frame_ms"] / rows["onnxruntime"]["frame_ms"]
    line = f"hrnet onnxruntime+mask: 76x fewer bytes returned per frame than onnxruntime; frame cost {ratio:.3f}x"
    assert line in table


def test_the_mask_artifact_is_the_logits_export_with_the_argmax_in_the_graph(report: tuple[Path, dict]) -> None:
    import onnx
    import onnxruntime as ort

    out, _ = report
    logits_file = out / "cache" / f"hrnet-tiny-{SIZE[0]}x{SIZE[1]}-fp32.onnx"
    mask_file = logits_file.with_name(f"{logits_file.stem}-mask.onnx")
    assert [o.name for o in onnx.load(str(mask_file)).graph.output] == ["mask"]
    x = np.random.default_rng(0).standard_normal((1, 3, *SIZE), dtype=np.float32)
    (logits,) = ort.InferenceSession(str(logits_file), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    (mask,) = ort.InferenceSession(str(mask_file), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    np.testing.assert_array_equal(mask, logits.argmax(axis=1))
