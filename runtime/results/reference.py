"""`cfnet.reference`: what a model saw at export, for the drift score to compare a stream with.

Computed on the export's calibration images (`--calib-data`) from the model's logits over each image's
valid area (no letterbox padding): the share of pixels the argmax gives each class, and the histogram of
each pixel's top-1 softmax probability (`BINS` equal bins over [0, 1]). Stored in the ONNX metadata as JSON:

    {"version": 1, "images": 32, "pixels": 16777216, "shares": [C floats], "top1_hist": [BINS floats]}

Low confidence is defined by the reference itself: a pixel is low-confidence when its top-1 probability is
below the upper edge of the bin where the reference's cumulative histogram reaches `LOW_QUANTILE`; the
reference's own share of such pixels is that cumulative value (about 10 %, whatever the model's calibration).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.results.shares import class_counts

VERSION = 1
BINS = 50
LOW_QUANTILE = 0.10


def top1_probability(scores: np.ndarray, stride: int = 1) -> np.ndarray:
    """`C x H x W` logits -> the softmax probability of the best class per pixel (`H x W` float32; every
    `stride`-th row and column, which estimates a share as well at a fraction of the cost)."""
    scores = np.asarray(scores[:, ::stride, ::stride], np.float32)
    peak = scores.max(axis=0)
    return 1.0 / np.exp(scores - peak).sum(axis=0)


@dataclass(frozen=True, eq=False)
class Reference:
    """Class shares (`C`, sum 1) and top-1 probability histogram (`BINS` shares over [0, 1], sum 1)."""

    shares: np.ndarray
    top1_hist: np.ndarray
    images: int
    pixels: int

    @property
    def low_threshold(self) -> float:
        """Top-1 probabilities below this are low-confidence (see the module)."""
        return float((self._low_bin() + 1) / len(self.top1_hist))

    @property
    def low_share(self) -> float:
        """The reference's share of low-confidence pixels."""
        return float(np.cumsum(self.top1_hist)[self._low_bin()])

    def _low_bin(self) -> int:
        cumulative = np.cumsum(self.top1_hist)
        return min(int(np.searchsorted(cumulative, LOW_QUANTILE - 1e-9)), len(cumulative) - 1)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": VERSION,
                "images": self.images,
                "pixels": self.pixels,
                "shares": [round(float(v), 8) for v in self.shares],
                "top1_hist": [round(float(v), 8) for v in self.top1_hist],
            }
        )

    @classmethod
    def from_json(cls, value: str | Mapping[str, Any], num_classes: int) -> Reference:
        """Parse and check a stored reference (a JSON string, or the decoded object of an engine sidecar);
        ValueError says what is wrong."""
        data = json.loads(value) if isinstance(value, str) else value
        if not isinstance(data, Mapping):
            raise ValueError("cfnet.reference is not a JSON object")
        if data.get("version") != VERSION:
            raise ValueError(f"cfnet.reference version {data.get('version')!r} is not {VERSION}")
        shares = _distribution(data.get("shares"), "shares")
        hist = _distribution(data.get("top1_hist"), "top1_hist")
        if len(shares) != num_classes:
            raise ValueError(f"cfnet.reference has {len(shares)} class shares for {num_classes} classes")
        if len(hist) < 2:
            raise ValueError("cfnet.reference top1_hist needs at least 2 bins")
        images, pixels = data.get("images"), data.get("pixels")
        if not (isinstance(images, int) and isinstance(pixels, int) and images > 0 and pixels > 0):
            raise ValueError("cfnet.reference needs positive whole 'images' and 'pixels'")
        return cls(shares, hist, images, pixels)


def _distribution(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.ndim != 1 or not array.size or not np.isfinite(array).all() or array.min() < 0:
        raise ValueError(f"cfnet.reference {name} must be a list of non-negative numbers")
    if abs(array.sum() - 1) > 1e-3:
        raise ValueError(f"cfnet.reference {name} must sum to 1, not {array.sum():.4f}")
    return array / array.sum()


class ReferenceBuilder:
    """Accumulates a `Reference` over images: `add(scores)` with each image's `C x H x W` logits (valid area
    only), then `build()`."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts = np.zeros(num_classes, np.int64)
        self.hist = np.zeros(BINS, np.int64)
        self.images = 0

    def add(self, scores: np.ndarray) -> None:
        if scores.ndim != 3 or scores.shape[0] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} x H x W logits, got shape {scores.shape}")
        self.counts += class_counts(np.argmax(scores, axis=0), self.num_classes)  # export time: numpy's is fine
        bins = np.minimum((top1_probability(scores) * BINS).astype(np.int64), BINS - 1)
        self.hist += np.bincount(bins.ravel(), minlength=BINS)
        self.images += 1

    def build(self) -> Reference:
        pixels = int(self.counts.sum())
        if not pixels:
            raise ValueError("no image was added to the reference")
        return Reference(self.counts / pixels, self.hist / pixels, self.images, pixels)
