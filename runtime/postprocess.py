"""Logits or in-graph masks -> masks (uint8 trainIds) at the frame's size; palette colours, overlay, legend."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from runtime.errors import UserError
from runtime.preprocess import FrameInfo


def postprocess(outputs: np.ndarray, infos: Sequence[FrameInfo]) -> list[np.ndarray]:
    """A backend's output -> one `H x W` uint8 mask per frame: argmax (logits only), unpad, nearest resize.

    `outputs`: `N x C x h x w` logits, or the `N x h x w` uint8 mask of a model that takes the argmax in its
    graph (`cfnet export onnx --output mask`), which is only cropped and resized. Logits smaller than the
    padded input (a foreign model's 1/4, as Hugging Face SegFormer's) are first resized bilinearly to it
    (half-pixel centres: torch's `interpolate(mode="bilinear", align_corners=False)`, as that model's own
    post-processing does), so that the argmax sees interpolated scores, not blocks; a smaller mask is
    cropped in proportion and resized nearest.
    """
    masks = []
    for output, info in zip(outputs, infos, strict=True):
        if output.ndim == 3 and output.shape[1:] != info.input_size:
            output = upsample_scores(output, info.input_size)
        labels = class_ids(valid_area(output, info.resized_size, info.input_size))
        height, width = info.frame_size
        if labels.shape != (height, width):
            labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
        masks.append(np.ascontiguousarray(labels))
    return masks


def valid_area(output: np.ndarray, resized_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """The part of one frame's output (`C x h x w` scores or an `h x w` mask) over the frame's resized area: the
    letterbox padding cropped off, in proportion when the output is smaller than the `input_size` it came from."""
    rows = -(-resized_size[0] * output.shape[-2] // input_size[0])
    cols = -(-resized_size[1] * output.shape[-1] // input_size[1])
    return output[..., :rows, :cols]


def upsample_scores(scores: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`C x h x w` scores -> `C x H x W`, bilinear with half-pixel centres, channel by channel."""
    out = np.empty((scores.shape[0], *size), dtype=np.float32)
    for c in range(scores.shape[0]):
        plane = np.ascontiguousarray(scores[c], dtype=np.float32)
        cv2.resize(plane, (size[1], size[0]), out[c], interpolation=cv2.INTER_LINEAR)
    return out


def class_ids(output: np.ndarray) -> np.ndarray:
    """One frame's output -> `H x W` uint8 class ids: a `C x H x W` score map is reduced by `argmax_classes`,
    an `H x W` mask (the model's own argmax) is taken as it is."""
    if output.ndim == 2:
        if output.dtype != np.uint8:
            raise UserError(f"a mask output must be uint8, not {output.dtype}", "model output")
        return output
    return argmax_classes(output)


def argmax_classes(scores: np.ndarray) -> np.ndarray:
    """`C x H x W` scores -> `H x W` uint8 index of the largest (the first on ties), as `np.argmax(axis=0)`.

    A running maximum with OpenCV's SIMD compare/max/masked copy: about 20x faster than numpy's axis-0 argmax
    (which transposes first), which matters on a 2-core box where post-processing competes with inference.
    """
    if scores.shape[0] > 256:
        raise UserError(f"{scores.shape[0]} classes do not fit a uint8 mask", "at most 256")
    best = np.ascontiguousarray(scores[0], dtype=np.float32).copy()
    labels = np.zeros(best.shape, np.uint8)
    value = np.empty_like(labels)
    for c in range(1, scores.shape[0]):
        channel = np.ascontiguousarray(scores[c], dtype=np.float32)
        greater = cv2.compare(channel, best, cv2.CMP_GT)
        cv2.max(best, channel, dst=best)
        value.fill(c)
        cv2.copyTo(value, greater, labels)
    return labels


def palette_lut(palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """A 256 x 3 BGR lookup table from RGB palette colours (unlisted ids, e.g. 255 = ignore, are black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    lut[: len(colours)] = colours[:, ::-1]
    return lut


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """`H x W` class ids -> `H x W x 3` BGR colours (`palette`: RGB colours, or a lookup from `palette_lut`)."""
    lut = palette if isinstance(palette, np.ndarray) and palette.shape == (256, 3) else palette_lut(palette)
    return cv2.LUT(cv2.merge([mask, mask, mask]), lut.reshape(256, 1, 3))


def overlay(frame_bgr: np.ndarray, colours_bgr: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the frame: `alpha` = 0 shows the frame only, 1 the mask only."""
    return cv2.addWeighted(colours_bgr, alpha, frame_bgr, 1.0 - alpha, 0.0)


def draw_legend(
    image_bgr: np.ndarray, mask: np.ndarray, classes: Sequence[str], palette: Sequence[Sequence[int]]
) -> np.ndarray:
    """A copy of `image_bgr` with a swatch and name for each class present in `mask`, top-left."""
    out = image_bgr.copy()
    present = [int(c) for c in np.unique(mask) if c < len(classes)]
    scale = max(0.35, min(image_bgr.shape[:2]) / 900)
    line = max(12, round(24 * scale))
    for row, cls in enumerate(present):
        y = 4 + row * line
        if y + line > out.shape[0]:
            break
        r, g, b = (int(v) for v in palette[cls])
        cv2.rectangle(out, (4, y), (4 + line - 4, y + line - 4), (b, g, r), thickness=-1)
        cv2.putText(out, classes[cls], (8 + line, y + line - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3)
        cv2.putText(out, classes[cls], (8 + line, y + line - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1)
    return out
