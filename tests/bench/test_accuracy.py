"""Accuracy beside speed: mIoU per backend and argmax agreement with the reference, against hand counts."""

from __future__ import annotations

import numpy as np

from bench.accuracy import measure_accuracy, pad_to_multiple


class ArrayRunner:
    """A runner that returns one-hot logits of fixed class maps, one per call, cropping to the input size."""

    def __init__(self, name: str, maps: list[np.ndarray], classes: int) -> None:
        self.name = name
        self.maps = list(maps)
        self.classes = classes
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, images: np.ndarray) -> np.ndarray:
        self.shapes.append(images.shape)
        mask = self.maps.pop(0)
        logits = np.zeros((1, self.classes, *images.shape[-2:]), dtype=np.float32)
        h, w = mask.shape
        logits[0, :, :h, :w] = np.eye(self.classes, dtype=np.float32)[mask].transpose(2, 0, 1)
        return logits

    def close(self) -> None:
        pass


def test_miou_and_agreement_match_hand_counts() -> None:
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 3, size=(5, 7)) for _ in range(2)]
    reference = [label.copy() for label in labels]  # perfect
    other = [label.copy() for label in labels]
    other[0][0, :3] = (other[0][0, :3] + 1) % 3  # 3 wrong pixels
    runners = {"torch": ArrayRunner("torch", reference, 3), "onnxruntime": ArrayRunner("onnxruntime", other, 3)}
    images = [np.zeros((3, 5, 7), dtype=np.float32) for _ in labels]
    result = measure_accuracy(runners, zip(images, labels, strict=True), num_classes=3, divisor=4)
    assert result["torch"] == {"miou": 1.0, "agreement": 1.0}
    assert result["onnxruntime"]["agreement"] == 1 - 3 / (2 * 5 * 7)
    flat_pred = np.concatenate([o.ravel() for o in other])
    flat_true = np.concatenate([label.ravel() for label in labels])
    ious = [((flat_pred == c) & (flat_true == c)).sum() / ((flat_pred == c) | (flat_true == c)).sum() for c in range(3)]
    assert np.isclose(result["onnxruntime"]["miou"], np.mean(ious))
    assert runners["torch"].shapes == [(1, 3, 8, 8), (1, 3, 8, 8)]  # padded to the divisor


def test_pad_to_multiple_pads_bottom_right_with_zeros() -> None:
    images = np.ones((1, 3, 5, 9), dtype=np.float32)
    padded = pad_to_multiple(images, 4)
    assert padded.shape == (1, 3, 8, 12)
    assert padded[..., :5, :9].min() == 1 and padded.sum() == images.sum()


class ProfileLimitedRunner(ArrayRunner):
    """Fails on inputs larger than `limit`, as a TensorRT engine built for a smaller profile does."""

    def __init__(self, name: str, maps: list[np.ndarray], classes: int, limit: int) -> None:
        super().__init__(name, maps, classes)
        self.limit = limit

    def infer(self, images: np.ndarray) -> np.ndarray:
        if max(images.shape[-2:]) > self.limit:
            raise RuntimeError(f"input {images.shape[-2]}x{images.shape[-1]} exceeds the engine's profile\nmore")
        return super().infer(images)


def test_a_failing_runner_marks_only_its_own_result() -> None:
    labels = [np.zeros((4, 4), np.int64), np.ones((8, 8), np.int64)]
    images = [np.zeros((3, *label.shape), np.float32) for label in labels]
    runners = {
        "torch": ArrayRunner("torch", [label.copy() for label in labels], 2),
        "tensorrt": ProfileLimitedRunner("tensorrt", [label.copy() for label in labels], 2, limit=4),
    }
    result = measure_accuracy(runners, zip(images, labels, strict=True), num_classes=2, divisor=4)
    assert result["torch"] == {"miou": 1.0, "agreement": 1.0}
    assert result["tensorrt"] == {
        "miou": None, "agreement": None, "error": "accuracy failed: input 8x8 exceeds the engine's profile"
    }
    broken_reference = {"torch": ProfileLimitedRunner("torch", list(labels), 2, limit=4),
                        "onnxruntime": ArrayRunner("onnxruntime", list(labels), 2)}
    result = measure_accuracy(broken_reference, zip(images, labels, strict=True), num_classes=2, divisor=4)
    assert result["onnxruntime"] == {"miou": 1.0, "agreement": None}  # no agreement with a reference that failed
