"""Accuracy beside speed: each backend's mIoU on a labelled split and its argmax agreement with PyTorch eager."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from bench.runners import Runner, first_line


def pad_to_multiple(images: np.ndarray, divisor: int) -> np.ndarray:
    """Zero-pad `N x C x H x W` at the bottom and right to a multiple of `divisor` (zero is the mean colour)."""
    h, w = images.shape[-2:]
    ph, pw = -h % divisor, -w % divisor
    if ph == 0 and pw == 0:
        return images
    return np.pad(images, ((0, 0), (0, 0), (0, ph), (0, pw)))


def predict(runner: Runner, image: np.ndarray, divisor: int) -> np.ndarray:
    """Class map `H x W` of one normalised `3 x H x W` image, padded for the model and cropped back (the runtime's
    postprocess: logits or a model's own mask)."""
    from runtime.postprocess import postprocess
    from runtime.preprocess import FrameInfo

    size = (int(image.shape[-2]), int(image.shape[-1]))
    padded = np.ascontiguousarray(pad_to_multiple(image[None].astype(np.float32), divisor))
    info = FrameInfo(frame_size=size, resized_size=size, input_size=(padded.shape[2], padded.shape[3]))
    return np.asarray(postprocess(runner.infer(padded), [info])[0], dtype=np.int64)


def measure_accuracy(
    runners: Mapping[str, Runner],
    samples: Iterable[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    divisor: int,
    reference: str = "torch",
) -> dict[str, dict[str, Any]]:
    """mIoU (cfnet.metrics) of every runner over `samples` (image, label) and pixel agreement with `reference`.

    Agreement is the share of pixels whose argmax equals the reference runner's (1.0 for the reference
    itself; None when the reference is not among the runners or failed). A runner that fails on an image
    stops being scored: its result is `{"miou": None, "agreement": None, "error": reason}`, the others go on.
    """
    from cfnet.metrics import ConfusionMatrix

    matrices = {name: ConfusionMatrix(num_classes) for name in runners}
    errors: dict[str, str] = {}
    agree = dict.fromkeys(runners, 0)
    pixels = 0
    for image, label in samples:
        preds: dict[str, np.ndarray] = {}
        for name, runner in runners.items():
            if name in errors:
                continue
            try:
                preds[name] = predict(runner, image, divisor)
            except Exception as exc:  # e.g. an image outside a TensorRT engine's profile: this row only
                errors[name] = f"accuracy failed: {first_line(exc)}"
        for name, pred in preds.items():
            matrices[name].update(pred, np.asarray(label))
            if reference in preds:
                agree[name] += int((pred == preds[reference]).sum())
        pixels += int(np.asarray(label).size)
    results: dict[str, dict[str, Any]] = {}
    for name, matrix in matrices.items():
        if name in errors:
            results[name] = {"miou": None, "agreement": None, "error": errors[name]}
            continue
        scored = reference in runners and reference not in errors and pixels
        miou = matrix.scores()["miou"]
        assert isinstance(miou, float)
        results[name] = {"miou": miou, "agreement": agree[name] / pixels if scored else None}
    return results
