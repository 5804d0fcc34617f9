"""Frames (OpenCV BGR) -> the model's normalised input batch: BGR->RGB, aspect-kept resize, pad, normalise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.artifact import ModelMetadata
from runtime.errors import UserError


@dataclass(frozen=True)
class FrameInfo:
    """Where a frame sits in the batch: its own size and the size it was resized to (the rest is padding)."""

    frame_size: tuple[int, int]
    resized_size: tuple[int, int]
    input_size: tuple[int, int]


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """Adapt a grayscale (`HxW`, `HxWx1`) or BGRA frame to 3-channel uint8 BGR; other shapes, and frames without
    a pixel, are refused."""
    if frame.ndim in (2, 3) and min(frame.shape[:2]) == 0:
        raise UserError(f"empty frame ({frame.shape[0]}x{frame.shape[1]} pixels)", "a frame needs at least one pixel")
    if frame.dtype != np.uint8:
        if frame.dtype == np.uint16:
            frame = (frame >> 8).astype(np.uint8)
        else:
            raise UserError(f"unsupported frame type {frame.dtype}", "expected 8-bit images")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise UserError(f"unsupported frame shape {frame.shape}", "expected HxW, HxWx1, HxWx3 or HxWx4")


def fit_size(frame_size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The largest (H, W) with the frame's aspect ratio inside `box` (up- or down-scaled)."""
    h, w = frame_size
    scale = min(box[0] / h, box[1] / w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def padded_size(size: tuple[int, int], divisor: int) -> tuple[int, int]:
    """`size` rounded up to a multiple of `divisor`."""
    return -(-size[0] // divisor) * divisor, -(-size[1] // divisor) * divisor


def preprocess(
    frames_bgr: Sequence[np.ndarray] | np.ndarray, metadata: ModelMetadata
) -> tuple[np.ndarray, list[FrameInfo]]:
    """Frames -> `(N x 3 x H x W` float32 batch, per-frame `FrameInfo`).

    `frames_bgr`: one frame (`HxW`, `HxWxC`), a list of frames or an `N x H x W x C` array; grayscale and BGRA
    are adapted to BGR. Each frame is converted to RGB, resized (aspect kept, bilinear) to fit
    `metadata.input_size`, normalised with `metadata.mean`/`std` (RGB, 0..1 scale) and placed top-left in a
    zero (after normalisation) canvas whose H and W are multiples of `metadata.size_divisor`.
    """
    if isinstance(frames_bgr, np.ndarray) and frames_bgr.ndim in (2, 3):
        frames_bgr = [frames_bgr]
    frames = [to_bgr(np.asarray(f)) for f in frames_bgr]
    if not frames:
        raise UserError("no frames to preprocess", "preprocess")
    sizes = [fit_size(f.shape[:2], metadata.input_size) for f in frames]
    canvas = padded_size((max(s[0] for s in sizes), max(s[1] for s in sizes)), metadata.size_divisor)
    batch = np.zeros((len(frames), 3, *canvas), dtype=np.float32)
    scale = np.float32(1.0 / 255.0) / np.asarray(metadata.std, dtype=np.float32)
    shift = np.asarray(metadata.mean, dtype=np.float32) / np.asarray(metadata.std, dtype=np.float32)
    infos = []
    for i, (frame, (h, w)) in enumerate(zip(frames, sizes, strict=True)):
        infos.append(FrameInfo(frame_size=(frame.shape[0], frame.shape[1]), resized_size=(h, w), input_size=canvas))
        if (h, w) != frame.shape[:2]:
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
        bgr_planes = cv2.split(frame)  # planar already: no HWC -> CHW transpose
        for c in range(3):  # RGB channel c is BGR plane 2 - c
            target = batch[i, c, :h, :w]
            np.multiply(bgr_planes[2 - c], scale[c], out=target)
            np.subtract(target, shift[c], out=target)
    return batch, infos
