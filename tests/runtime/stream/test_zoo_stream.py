"""Acceptance: the synthetic driving video streamed through a tiny zoo model exported by `export.onnx`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cfnet.data.synth import synthesize_video
from cfnet.models.registry import build_model
from export.onnx import export_onnx
from runtime.backends import open_backend
from runtime.stream import run_stream
from tests.runtime.helpers import Reference, read_video

pytestmark = pytest.mark.slow  # acceptance: every zoo model through the stream


def test_exported_zoo_model_streams_frame_exact_with_onnxruntime_masks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("segformer", preset="tiny").eval()
    onnx_path = export_onnx(model, tmp_path / "segformer_tiny.onnx", size=(64, 128))
    video = synthesize_video(tmp_path / "drive.mp4", frames=8, size=(72, 128), fps=15.0)
    masks: dict[int, np.ndarray] = {}
    with open_backend(onnx_path, device="cpu") as backend:
        stats = run_stream(
            str(video), backend, tmp_path / "drive_seg.mp4", on_frame=lambda i, f, m, o: masks.update({i: m})
        )
    inputs, in_fps = read_video(video)
    written, out_fps = read_video(tmp_path / "drive_seg.mp4")
    assert stats.frames == len(inputs) == len(written) == 8 and out_fps == in_fps
    assert all(f.shape == (72, 128, 3) for f in written)
    props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    size = tuple(int(v) for v in props["cfnet.input_size"].split("x"))
    reference = Reference(
        onnx_path,
        (size[0], size[1]),
        int(props["cfnet.size_divisor"]),
        json.loads(props["cfnet.mean"]),
        json.loads(props["cfnet.std"]),
    )
    for i, frame in enumerate(inputs):  # 72x128 is letterboxed to 64x114, padded to 64x128
        np.testing.assert_array_equal(masks[i], reference.mask(frame))
