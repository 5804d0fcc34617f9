"""Models that return a `mask` (in-graph argmax): the runtime gives the same masks, overlays and files as from
the logits model, with no host argmax and the same cropping, resizing and padding rules."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from export.mask import write_mask_variant
from runtime.backends import open_backend
from runtime.backends.onnxruntime import OnnxRuntimeBackend
from runtime.errors import UserError
from runtime.postprocess import postprocess
from runtime.preprocess import preprocess
from runtime.segmentation import segment
from tests.runtime.helpers import cfnet, export_tiny, read_video, synthetic_frames, tiny_metadata


def mask_model(logits_model: Path, out: Path) -> Path:
    """`logits_model` with ArgMax + Cast appended and `logits` dropped from the outputs, as `--output mask`."""
    write_mask_variant(logits_model, out)
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["mask"]
    return out


@pytest.fixture(scope="module")
def tiny_mask_onnx(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mask_model(tiny_onnx, tmp_path_factory.mktemp("masks") / "tiny-mask.onnx")


def test_a_mask_model_returns_uint8_class_ids_equal_to_the_logits_argmax(tiny_onnx: Path, tiny_mask_onnx: Path) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 56), dtype=np.float32)
    with open_backend(tiny_onnx, device="cpu") as logits_model, open_backend(tiny_mask_onnx, device="cpu") as masks:
        assert masks.output == "mask"
        mask = masks.infer(x)
        logits = logits_model.infer(x)
    assert mask.dtype == np.uint8 and mask.shape == (2, 40, 56)
    assert logits.dtype == np.float32 and logits.shape == (2, 4, 40, 56)
    np.testing.assert_array_equal(mask, logits.argmax(axis=1))
    assert logits.nbytes == 16 * mask.nbytes  # 4 classes x 4 bytes; 19 classes: 76x
    bound = OnnxRuntimeBackend(tiny_mask_onnx, device="cpu", io_binding=True)  # the GPU path's output binding
    np.testing.assert_array_equal(bound.infer(x), mask)


@pytest.mark.parametrize("size", [(48, 64), (30, 100), (60, 90), (96, 128)])
def test_segment_gives_the_same_mask_and_overlay_from_both_models(
    tiny_onnx: Path, tiny_mask_onnx: Path, size: tuple[int, int]
) -> None:
    frame = np.random.default_rng(3).integers(0, 256, (*size, 3), dtype=np.uint8)  # noise: a varied argmax
    with open_backend(tiny_onnx, device="cpu") as logits_model, open_backend(tiny_mask_onnx, device="cpu") as masks:
        mask_a, overlay_a = segment(frame, logits_model, legend=True)
        mask_b, overlay_b = segment(frame, masks, legend=True)
    assert mask_b.shape == size and len(np.unique(mask_b)) > 1
    np.testing.assert_array_equal(mask_a, mask_b)
    np.testing.assert_array_equal(overlay_a, overlay_b)


def test_a_fixed_size_mask_model_is_padded_and_its_mask_cropped(tmp_path: Path) -> None:
    fixed = export_tiny(tmp_path / "fixed.onnx", tiny_metadata(), fixed_size=(48, 64))
    fixed_mask = mask_model(fixed, tmp_path / "fixed-mask.onnx")
    frame = np.random.default_rng(1).integers(0, 256, (30, 100, 3), dtype=np.uint8)  # 19x64, padded to 24x64
    with open_backend(fixed, device="cpu") as logits_model, open_backend(fixed_mask, device="cpu") as masks:
        batch, _ = preprocess(frame, masks.metadata)
        assert masks.infer(batch).shape == (1, *batch.shape[2:])
        np.testing.assert_array_equal(segment(frame, logits_model)[0], segment(frame, masks)[0])


def test_postprocess_takes_logits_or_a_mask_in_one_function() -> None:
    rng = np.random.default_rng(0)
    _, infos = preprocess([np.zeros((36, 64, 3), np.uint8), np.zeros((70, 40, 3), np.uint8)], _meta())
    logits = rng.standard_normal((2, 5, *infos[0].input_size), dtype=np.float32)  # full size, as cfnet models
    from_logits = postprocess(logits, infos)
    from_mask = postprocess(logits.argmax(axis=1).astype(np.uint8), infos)
    assert [m.shape for m in from_mask] == [(36, 64), (70, 40)]
    for a, b in zip(from_logits, from_mask, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(UserError, match="mask output must be uint8"):
        postprocess(logits.argmax(axis=1), infos)  # int64 class ids: not what a cfnet mask model returns


def test_stream_writes_the_same_video_masks_and_summary_from_both_models(
    tiny_onnx: Path,
    tiny_mask_onnx: Path,
    tmp_path: Path,
    write_video: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    video = write_video(tmp_path / "in.mp4", synthetic_frames(6, (60, 90)), fps=6.0)
    summaries = {}
    for name, model in (("logits", tiny_onnx), ("mask", tiny_mask_onnx)):
        out, masks = tmp_path / name / "seg.mp4", tmp_path / name / "masks"
        args = [str(a) for a in ("stream", video, "--model", model, "--out", out, "--save-masks", masks)]
        args += ["--legend", "--json"]
        code, stdout, _ = cfnet(args, capsys)
        assert code == 0
        summaries[name] = json.loads(stdout)
    assert sorted(os.listdir(tmp_path / "mask" / "masks")) == sorted(os.listdir(tmp_path / "logits" / "masks"))
    assert len(os.listdir(tmp_path / "mask" / "masks")) == 6
    classes = set()
    for file in os.listdir(tmp_path / "logits" / "masks"):
        a = cv2.imread(str(tmp_path / "logits" / "masks" / file), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "mask" / "masks" / file), cv2.IMREAD_UNCHANGED)
        assert a is not None and b is not None
        np.testing.assert_array_equal(a, b)
        classes.update(np.unique(a).tolist())
    assert len(classes) > 1
    frames_a, _ = read_video(tmp_path / "logits" / "seg.mp4")
    frames_b, _ = read_video(tmp_path / "mask" / "seg.mp4")
    assert len(frames_a) == len(frames_b) == 6
    for a, b in zip(frames_a, frames_b, strict=True):
        np.testing.assert_array_equal(a, b)  # same overlays, same encoder: the same bytes decoded
    a, b = summaries["logits"]["streams"][0], summaries["mask"]["streams"][0]  # the one stream's summary
    assert set(a) == set(b) and set(a["latency_ms"]) == set(b["latency_ms"])
    assert (b["frames"], b["dropped"], b["ended_by"]) == (a["frames"], a["dropped"], a["ended_by"]) == (6, 0, "end")


def _meta():  # noqa: ANN202 - a runtime ModelMetadata
    from runtime.artifact import metadata_from_props

    return metadata_from_props({**tiny_metadata("48x64", 8), "cfnet.classes": json.dumps(list("abcde")),
                                "cfnet.palette": json.dumps([[i, i, i] for i in range(5)])}, "test")
