"""Pre-processing against a numpy reference; post-processing, colouring, overlay, legend; `segment`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from runtime.artifact import ModelMetadata
from runtime.backends import open_backend
from runtime.errors import UserError
from runtime.postprocess import colorize, draw_legend, overlay, postprocess, valid_area
from runtime.preprocess import preprocess
from runtime.segmentation import segment
from tests.runtime.helpers import CLASSES, MEAN, PALETTE, STD, synthetic_frames

META = ModelMetadata(
    classes=tuple(CLASSES),
    palette=tuple(tuple(c) for c in PALETTE),  # type: ignore[misc]
    mean=(MEAN[0], MEAN[1], MEAN[2]),
    std=(STD[0], STD[1], STD[2]),
    input_size=(64, 64),
    size_divisor=16,
)


def _normalised(frame_bgr: np.ndarray) -> np.ndarray:
    rgb = frame_bgr[..., ::-1].astype(np.float64) / 255.0
    return ((rgb - np.array(MEAN)) / np.array(STD)).transpose(2, 0, 1)


def test_preprocess_resizes_keeping_aspect_pads_and_normalises() -> None:
    frame = np.random.default_rng(0).integers(0, 256, (30, 100, 3), dtype=np.uint8)
    batch, infos = preprocess(frame, META)
    # 30x100 fits 64x64 at scale 0.64 -> 19x64, padded to 32x64 (divisor 16)
    assert batch.shape == (1, 3, 32, 64) and batch.dtype == np.float32
    assert infos[0].frame_size == (30, 100) and infos[0].resized_size == (19, 64) and infos[0].input_size == (32, 64)
    expected = _normalised(cv2.resize(frame, (64, 19), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_allclose(batch[0, :, :19, :], expected, atol=1e-5)
    assert not batch[0, :, 19:, :].any()


def test_preprocess_upscales_small_frames_and_batches_several() -> None:
    frames = [np.full((16, 16, 3), 90, np.uint8), np.full((8, 32, 3), 200, np.uint8)]
    batch, infos = preprocess(frames, META)
    assert [i.resized_size for i in infos] == [(64, 64), (16, 64)]
    assert batch.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(batch[1, :, :16, :], _normalised(np.full((16, 64, 3), 200, np.uint8)), atol=1e-5)
    assert not batch[1, :, 16:, :].any()


def test_grayscale_and_bgra_frames_are_adapted_to_bgr() -> None:
    gray = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    reference, _ = preprocess(bgr, META)
    for variant in (gray, gray[..., None], bgra):
        np.testing.assert_array_equal(preprocess(variant, META)[0], reference)
    with pytest.raises(UserError, match="unsupported frame shape"):
        preprocess(np.zeros((8, 8, 2), np.uint8), META)


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 7), (7, 0, 1), (7, 0, 4)])
def test_a_frame_without_a_pixel_is_refused_by_name(shape: tuple[int, ...]) -> None:
    with pytest.raises(UserError, match=rf"^empty frame \({shape[0]}x{shape[1]} pixels\)"):
        preprocess([np.zeros(shape, np.uint8)], META)


def test_postprocess_unpads_and_resizes_nearest_to_the_frame() -> None:
    frame = np.zeros((30, 100, 3), np.uint8)
    _, infos = preprocess(frame, META)
    labels = np.random.default_rng(2).integers(0, 4, (32, 64))
    logits = np.eye(4, dtype=np.float32)[labels].transpose(2, 0, 1)[None]  # one-hot: argmax == labels
    mask = postprocess(logits, infos)[0]
    assert mask.shape == (30, 100) and mask.dtype == np.uint8
    expected = cv2.resize(labels[:19, :64].astype(np.uint8), (100, 30), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(mask, expected)


def test_valid_area_crops_the_padding_in_proportion() -> None:
    """What post-processing and the drift score's confidence both keep of an output: the frame's area."""
    scores = np.zeros((2, 16, 32), np.float32)
    assert valid_area(scores, (12, 30), (16, 32)).shape == (2, 12, 30)
    assert valid_area(scores[:, :4, :8], (12, 30), (16, 32)).shape == (2, 3, 8)  # a 1/4 output: rounded up
    assert valid_area(np.zeros((16, 32), np.uint8), (12, 30), (16, 32)).shape == (12, 30)  # a mask


def test_colours_overlay_and_legend() -> None:
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    colours = colorize(mask, PALETTE)
    assert colours[1, 0].tolist() == PALETTE[2][::-1]  # BGR
    frame = np.full((2, 2, 3), 100, np.uint8)
    np.testing.assert_array_equal(overlay(frame, colours, 0.0), frame)
    np.testing.assert_array_equal(overlay(frame, colours, 1.0), colours)
    half = overlay(frame, colours, 0.5).astype(int)
    assert np.abs(half - (frame.astype(int) + colours.astype(int)) / 2).max() <= 1
    canvas = np.zeros((120, 160, 3), np.uint8)
    drawn = draw_legend(canvas, np.array([[1, 3]], np.uint8), CLASSES, PALETTE)
    swatches = {tuple(int(v) for v in c) for c in drawn.reshape(-1, 3)}
    assert tuple(PALETTE[1][::-1]) in swatches and tuple(PALETTE[3][::-1]) in swatches
    assert tuple(PALETTE[0][::-1]) not in swatches
    assert not canvas.any()  # drawn on a copy


def test_segment_mask_equals_onnxruntime_argmax(tiny_onnx: Path) -> None:
    frame = synthetic_frames(1, (48, 64))[0]  # the model's input size, divisible by 8: no resize, no pad
    with open_backend(tiny_onnx, device="cpu") as backend:
        mask, blended = segment(frame, backend, alpha=0.4)
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": _normalised(frame)[None].astype(np.float32)})[0]
    np.testing.assert_array_equal(mask, logits[0].argmax(axis=0))
    assert len(np.unique(mask)) > 1
    assert blended.shape == frame.shape and blended.dtype == np.uint8


def test_argmax_classes_equals_numpy_argmax_with_ties_and_crops() -> None:
    from runtime.postprocess import argmax_classes

    rng = np.random.default_rng(4)
    scores = rng.standard_normal((19, 40, 70)).astype(np.float32)
    cropped = scores[:, :33, :51]
    np.testing.assert_array_equal(argmax_classes(cropped), cropped.argmax(axis=0))
    ties = rng.integers(0, 3, (5, 16, 16)).astype(np.float32)  # many equal maxima: the first one wins
    np.testing.assert_array_equal(argmax_classes(ties), ties.argmax(axis=0))
    assert argmax_classes(ties).dtype == np.uint8


def test_quarter_size_logits_are_upsampled_bilinearly_as_transformers_does() -> None:
    """A foreign model with logits at 1/4 of its input (Hugging Face SegFormer): the mask is the argmax of the
    bilinearly upsampled logits, as `SegformerImageProcessor.post_process_semantic_segmentation` computes it
    (`interpolate(mode="bilinear", align_corners=False)`), not a blocky nearest resize of a 1/4 mask."""
    import torch
    from transformers import SegformerImageProcessor
    from transformers.modeling_outputs import SemanticSegmenterOutput

    meta = ModelMetadata(
        classes=tuple(CLASSES), palette=META.palette, mean=META.mean, std=META.std, input_size=(64, 96)
    )
    frame = np.zeros((64, 96, 3), np.uint8)  # the input size: no resize, no padding, as the processor's target
    _, infos = preprocess(frame, meta)
    logits = np.random.default_rng(3).standard_normal((1, len(CLASSES), 16, 24)).astype(np.float32)
    mask = postprocess(logits, infos)[0]
    outputs = SemanticSegmenterOutput(logits=torch.from_numpy(logits))
    reference = SegformerImageProcessor().post_process_semantic_segmentation(outputs, target_sizes=[(64, 96)])[0]
    assert mask.shape == (64, 96)
    assert np.mean(mask == reference.numpy()) >= 0.999
    blocky = cv2.resize(logits[0].argmax(axis=0).astype(np.uint8), (96, 64), interpolation=cv2.INTER_NEAREST)
    assert np.mean(blocky == reference.numpy()) < 0.95  # the old way: far from the reference
