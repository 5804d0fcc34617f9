"""cfnet.metrics against brute-force per-pixel counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cfnet.metrics import ConfusionMatrix, confusion_matrix, scores


def _random_pair(rng: np.random.Generator, shape: tuple[int, int], classes: int) -> tuple[np.ndarray, np.ndarray]:
    target = rng.integers(0, classes, shape).astype(np.uint8)
    target[rng.random(shape) < 0.2] = 255
    pred = rng.integers(0, classes, shape).astype(np.uint8)
    return pred, target


def _brute_matrix(pairs: list[tuple[np.ndarray, np.ndarray]], classes: int) -> list[list[int]]:
    cm = [[0] * classes for _ in range(classes)]
    for pred, target in pairs:
        for p, t in zip(pred.ravel().tolist(), target.ravel().tolist(), strict=True):
            if t != 255:
                cm[t][p] += 1
    return cm


def test_confusion_matrix_equals_a_per_pixel_count() -> None:
    rng = np.random.default_rng(0)
    for classes in (3, 19):
        pairs = [_random_pair(rng, (13, 17), classes) for _ in range(4)]
        acc = ConfusionMatrix(classes)
        for pred, target in pairs:
            acc.update(pred, target)
        assert acc.matrix.tolist() == _brute_matrix(pairs, classes)
        assert confusion_matrix(*pairs[0], num_classes=classes).tolist() == _brute_matrix(pairs[:1], classes)


def test_scores_equal_set_counts_over_the_whole_split() -> None:
    rng = np.random.default_rng(1)
    classes = 6
    pairs = [_random_pair(rng, (11, 9), classes) for _ in range(3)]
    for pred, target in pairs:  # class 5: predicted nowhere and absent from the targets (empty union)
        pred[pred == 5] = 4
        target[target == 5] = 255
    acc = ConfusionMatrix(classes)
    for pred, target in pairs:
        acc.update(pred, target)
    got = acc.scores()
    pred = np.concatenate([p.ravel() for p, _ in pairs])
    target = np.concatenate([t.ravel() for _, t in pairs])
    keep = target != 255
    pred, target = pred[keep], target[keep]
    ious, dices = [], []
    for c in range(classes):
        p_set = set(np.flatnonzero(pred == c).tolist())
        t_set = set(np.flatnonzero(target == c).tolist())
        union = p_set | t_set
        if not union:
            assert math.isnan(got["iou"][c]) and math.isnan(got["dice"][c])  # type: ignore[index]
            continue
        inter = len(p_set & t_set)
        ious.append(inter / len(union))
        dices.append(2 * inter / (len(p_set) + len(t_set)))
        assert got["iou"][c] == pytest.approx(ious[-1])  # type: ignore[index]
    assert len(ious) == classes - 1
    assert got["miou"] == pytest.approx(sum(ious) / len(ious))
    assert got["mdice"] == pytest.approx(sum(dices) / len(dices))
    assert got["pixel_accuracy"] == pytest.approx(float((pred == target).mean()))


def test_one_matrix_differs_from_the_mean_of_per_image_scores() -> None:
    big_t = np.zeros((10, 10), np.uint8)
    big_p = big_t.copy()
    small_t = np.array([[1, 1]], np.uint8)
    small_p = np.array([[0, 1]], np.uint8)
    acc = ConfusionMatrix(2)
    acc.update(big_p, big_t)
    acc.update(small_p, small_t)
    per_image = [scores(confusion_matrix(p, t, 2))["miou"] for p, t in ((big_p, big_t), (small_p, small_t))]
    # the whole split: IoU(0) = 100/101, IoU(1) = 1/2
    assert acc.scores()["miou"] == pytest.approx((100 / 101 + 0.5) / 2)
    assert acc.scores()["miou"] != pytest.approx(sum(per_image) / 2)  # type: ignore[arg-type]


def test_bad_inputs_are_rejected() -> None:
    target = np.array([[0, 1, 255]], np.uint8)
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix(np.array([[0, 3, 0]]), target, num_classes=3)
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix(np.array([[0, -1, 0]]), target, num_classes=3)
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(np.array([[0, 1, 0]]), np.array([[0, 7, 1]]), num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), num_classes=3)
    # an out-of-range prediction on an ignored pixel is not counted, so not an error
    assert confusion_matrix(np.array([[0, 1, 9]]), target, num_classes=3).sum() == 2


def test_an_empty_matrix_scores_nan() -> None:
    got = scores(np.zeros((3, 3), np.int64))
    assert math.isnan(got["miou"]) and math.isnan(got["pixel_accuracy"])  # type: ignore[arg-type]
