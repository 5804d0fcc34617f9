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


class VideoScores:
    """Scores of a video's predictions, frame by frame: mIoU (one confusion matrix over every frame) and
    flicker, the share of pixels whose predicted label changes between consecutive frames where the ground
    truth does not (the same valid label in both frames). Pooled over the video: changed / stable pixels.

    Flicker counts only pixels whose truth stands still, so a prediction that follows real motion is never
    flicker; what it cannot see is a prediction wrong the same way in every frame (stable and wrong: that
    is mIoU's business), nor flicker where the truth changes (object edges moving)."""

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX) -> None:
        self.confusion = ConfusionMatrix(num_classes, ignore_index)
        self.ignore_index = ignore_index
        self.changed = self.stable = self.frames = 0
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add the next frame's prediction and ground truth (`H x W` class ids, `ignore_index` ignored)."""
        self.confusion.update(pred, target)
        if self._previous is not None:
            last_pred, last_target = self._previous
            if last_pred.shape != pred.shape:
                raise ValueError(f"frame size changed from {last_pred.shape} to {pred.shape}")
            still = (target == last_target) & (target != self.ignore_index)
            self.stable += int(np.count_nonzero(still))
            self.changed += int(np.count_nonzero(still & (pred != last_pred)))
        self._previous = (np.array(pred, copy=True), np.array(target, copy=True))
        self.frames += 1

    @property
    def flicker(self) -> float:
        """changed / stable pixels (NaN before two frames or without a stable pixel)."""
        return self.changed / self.stable if self.stable else float("nan")

    def scores(self) -> dict[str, float | int]:
        """`miou`, `pixel_accuracy`, `flicker`, `frames`."""
        result = scores(self.confusion.matrix)
        return {
            "miou": float(result["miou"]),  # type: ignore[arg-type]
            "pixel_accuracy": float(result["pixel_accuracy"]),  # type: ignore[arg-type]
            "flicker": self.flicker,
            "frames": self.frames,
        }
