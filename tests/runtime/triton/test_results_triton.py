"""Acceptance of issue 24: the same JSON lines (but `wall_time`) from ONNX Runtime, the `--output mask` model and a
real Triton server (the nvidia-pytriton wheel's tritonserver on loopback) serving both, for the same video, with
smoothing and drift figures (the model carries a `cfnet.reference`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from export.mask import write_mask_variant
from export.triton import export_triton
from runtime.triton.server import TritonServer, free_ports
from tests.runtime.helpers import cfnet, read_video, synthetic_frames, write_video_file
from tests.runtime.stream.test_results_stream import with_reference
from tests.runtime.triton.test_triton import START_TIMEOUT, processes_naming

pytestmark = pytest.mark.slow  # acceptance: a real tritonserver


@pytest.fixture(scope="module")
def models(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The video, the tiny model with a reference, its `--output mask` variant and their Triton repository."""
    folder = tmp_path_factory.mktemp("results-triton")
    video = write_video_file(folder / "drive.mp4", synthetic_frames(10, (60, 90)), fps=6.0)
    logits = with_reference(tiny_onnx, folder / "ref.onnx", read_video(video)[0])
    masks = write_mask_variant(logits, folder / "ref-mask.onnx")
    repository = folder / "repo"
    export_triton(logits, repository, backend="python")
    export_triton(masks, repository, name="cfnetmask", backend="python")
    return {"video": video, "logits": logits, "mask": masks, "repository": repository}


@pytest.fixture(scope="module")
def server(models: dict[str, Path]) -> Iterator[TritonServer]:
    http, grpc, metrics = free_ports(3)
    with TritonServer(models["repository"], http_port=http, grpc_port=grpc, metrics_port=metrics) as running:
        running.start(START_TIMEOUT)
        yield running
    assert processes_naming(str(models["repository"])) == []


def _lines(model: str | Path, video: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    args = ["stream", video, "--model", model, "--emit", out, "--smooth", "vote:3", "--epsilon", "0.5"]
    code, _, err = cfnet(args, capsys)
    assert code == 0, err
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time"} for line in out.read_text().splitlines()]


def test_the_same_lines_from_onnxruntime_the_mask_model_and_triton(
    models: dict[str, Path], server: TritonServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"grpc://127.0.0.1:{server.grpc_port}/cfnet"
    runs = {
        name: _lines(model, models["video"], tmp_path / f"{name}.jsonl", capsys)
        for name, model in (
            ("onnxruntime", models["logits"]), ("onnxruntime mask", models["mask"]),
            ("triton", url), ("triton mask", url + "mask"),
        )
    }  # fmt: skip
    assert len(runs["onnxruntime"]) == 10 and all("drift" in r and r["regions"] for r in runs["onnxruntime"])
    assert runs["triton"] == runs["onnxruntime"]  # logits on both sides: everything, drift figures included
    assert runs["triton mask"] == runs["onnxruntime mask"]
    # a mask model has no confidence: its drift is the class-share part alone; the rest of each line is the same
    for logits, mask in zip(runs["onnxruntime"], runs["onnxruntime mask"], strict=True):
        assert {**logits, "drift": None} == {**mask, "drift": None}
        assert mask["drift"]["js"] == logits["drift"]["js"] and mask["drift"]["low_share"] is None
        assert logits["drift"]["low_share"] is not None
