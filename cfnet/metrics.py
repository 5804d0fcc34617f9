"""Segmentation metrics on numpy only (the bench scores every backend's output with them).

One confusion matrix is accumulated over a whole split; the scores come from it (not per-image means).
Rows are ground truth, columns predictions. Pixels whose target is `ignore_index` are not counted; any
other target or prediction outside `0 .. num_classes - 1` is rejected with `ValueError`.
"""

from __future__ import annotations

import numpy as np

from cfnet.data.labels import IGNORE_INDEX, NUM_CLASSES


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """`num_classes x num_classes` int64 counts: `cm[t, p]` pixels of class t predicted as p."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    t = target.reshape(-1).astype(np.int64)
    p = pred.reshape(-1).astype(np.int64)
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"target values must lie in 0..{num_classes - 1} or be {ignore_index}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predictions must lie in 0..{num_classes - 1}")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionMatrix:
    """Accumulates one confusion matrix over many (prediction, target) pairs."""

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add the pixels of one prediction (or a batch of them) against its target."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def scores(self) -> dict[str, float | list[float]]:
        """`scores(self.matrix)`."""
        return scores(self.matrix)


def scores(cm: np.ndarray) -> dict[str, float | list[float]]:
    """mIoU, mean Dice, pixel accuracy and per-class IoU/Dice of a confusion matrix.

    Means run over the classes whose union (ground truth or prediction) is not empty; a class with an
    empty union has IoU and Dice NaN. With no counted pixel at all, every score is NaN.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    union = tp + fp + fn
    present = union > 0
    iou = np.full(len(tp), np.nan)
    dice = np.full(len(tp), np.nan)
    iou[present] = tp[present] / union[present]
    dice[present] = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    total = cm.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "mdice": float(dice[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "iou": iou.tolist(),
        "dice": dice.tolist(),
    }
