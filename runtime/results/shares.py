"""Per-class pixel shares of a mask: how much of the frame each class covers."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def class_counts(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class id `0 .. num_classes - 1` in `mask` (int64, length `num_classes`).

    Values outside that range (255, the ignore value of labels, or ids a model has beyond its named
    classes) belong to no class. A uint8 mask is counted by OpenCV's histogram (a few times faster than
    `np.bincount` at 512x1024); wider integer masks by `np.bincount`.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, not {num_classes}")
    if mask.dtype == np.uint8:
        hist = cv2.calcHist([np.ascontiguousarray(mask)], [0], None, [256], [0, 256]).ravel()
        counts = np.zeros(max(num_classes, 256), np.int64)
        counts[:256] = np.rint(hist).astype(np.int64)
        return counts[:num_classes]
    values = np.asarray(mask).ravel()
    values = values[(values >= 0) & (values < num_classes)]
    return np.bincount(values.astype(np.int64), minlength=num_classes)


def class_shares(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of the frame's pixels of each class (float64, length `num_classes`).

    The denominator is every pixel of the mask, ignored ones included: the shares then sum to 1 minus the
    share of ignored pixels (exactly 1 for a model's mask, which has no ignore value).
    """
    total = int(np.asarray(mask).size)
    counts = class_counts(mask, num_classes)
    return counts / total if total else np.zeros(num_classes)


def shares_dict(shares: np.ndarray | Sequence[float], classes: Sequence[str], digits: int = 6) -> dict[str, float]:
    """`{class name: share}` for every class (absent ones 0.0), rounded to `digits` decimals for JSON."""
    if len(shares) != len(classes):
        raise ValueError(f"{len(shares)} shares for {len(classes)} classes")
    return {name: round(float(share), digits) for name, share in zip(classes, shares, strict=True)}
