"""Evaluation of a model on a labelled split: one confusion matrix over the whole split.

`evaluate(model, dataset)` returns mIoU, mean Dice, pixel accuracy and per-class IoU/Dice; with
`save_predictions` it also writes labelId PNGs named as the cityscapesScripts evaluator expects
(`{city}_{seq}_{frame}_leftImg8bit.png`, the name of the input image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from cfnet.atomic import make_folder, write_bytes
from cfnet.data.labels import IGNORE_INDEX, TRAIN_CLASSES, TRAIN_ID_TO_ID
from cfnet.errors import UserError
from cfnet.metrics import ConfusionMatrix, scores


def predict_logits(model: nn.Module, images: Tensor) -> Tensor:
    """Logits at the input size; inputs are zero-padded (bottom, right) to the model's `size_divisor`."""
    divisor = int(getattr(model, "size_divisor", 1) or 1)
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % divisor, (-width) % divisor
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
    logits = model(images)
    return logits[..., :height, :width]


def _result_names(dataset: Any) -> list[str] | None:
    samples = getattr(dataset, "samples", None)
    if samples is None or not all(hasattr(s, "result_name") for s in samples):
        return None
    return [str(s.result_name) for s in samples]


def _write_png(path: Path, array: np.ndarray) -> None:
    import cv2

    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise UserError("cannot encode prediction PNG", str(path))
    write_bytes(path, encoded.tobytes())


@torch.inference_mode()
def confusion(
    model: nn.Module,
    dataset: Any,
    *,
    device: str | torch.device = "cpu",
    indices: Sequence[int] | None = None,
    save_predictions: str | Path | None = None,
    progress: bool = False,
) -> np.ndarray:
    """The confusion matrix (rows truth, columns prediction) of `model` over `dataset` (or its `indices`)."""
    num_classes = _num_classes(model)
    out_dir = None
    names = None
    if save_predictions is not None:
        names = _result_names(dataset)
        if names is None:
            raise UserError("the dataset does not expose image paths to name predictions", "--save-predictions")
        out_dir = make_folder(save_predictions)
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, IGNORE_INDEX)
    order = range(len(dataset)) if indices is None else indices
    try:
        for index in tqdm(order, desc="evaluate", unit="img", disable=not progress, leave=False):
            image, label = dataset[index]
            logits = predict_logits(model, image.unsqueeze(0).to(device))
            pred = logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
            matrix.update(pred, np.asarray(label))
            if out_dir is not None and names is not None:
                _write_png(out_dir / names[index], TRAIN_ID_TO_ID[pred])
    finally:
        model.train(was_training)
    return matrix.matrix


def summarize(matrix: np.ndarray, images: int) -> dict[str, Any]:
    """mIoU, mean Dice, pixel accuracy, per-class IoU and Dice (None: class absent) of a confusion matrix."""
    result = scores(matrix)
    count = matrix.shape[0]
    names = list(TRAIN_CLASSES) if count == len(TRAIN_CLASSES) else [str(i) for i in range(count)]

    def per_class(values: Any) -> dict[str, float | None]:
        return {n: None if math.isnan(v) else v for n, v in zip(names, values, strict=True)}

    return {
        "miou": result["miou"],
        "mdice": result["mdice"],
        "pixel_accuracy": result["pixel_accuracy"],
        "iou": per_class(result["iou"]),
        "dice": per_class(result["dice"]),
        "images": images,
    }


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    device: str | torch.device = "cpu",
    save_predictions: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score `model` on `dataset` (items `(image 3xHxW float32, label HxW int64)` at full resolution).

    Returns `miou`, `mdice`, `pixel_accuracy`, `iou` and `dice` (class name -> score, None for classes
    absent from both labels and predictions) and `images`. `save_predictions`: a folder for labelId PNGs.
    """
    if len(dataset) == 0:
        raise UserError("nothing to evaluate: the split has no images", str(getattr(dataset, "root", "dataset")))
    matrix = confusion(model, dataset, device=device, save_predictions=save_predictions, progress=progress)
    return summarize(matrix, len(dataset))


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, "config", {}).get("num_classes", len(TRAIN_CLASSES)))


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str = "val",
    expect_model: str | None = None,
    save_predictions: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
    branch: str | None = None,
) -> dict[str, Any]:
    """`evaluate` the model of `checkpoint` (or its `branch`, see `load_model`) on `data`/`split`, plus the
    checkpoint, model, branch and split names."""
    from cfnet.checkpoint import load_model
    from cfnet.data.cityscapes import CityscapesDataset
    from cfnet.data.transforms import EvalTransform
    from cfnet.train.distributed import resolve_device

    model = load_model(checkpoint, expect_model=expect_model, branch=branch)
    if not Path(data).is_dir():
        raise UserError("data folder not found", str(data))
    dataset = CityscapesDataset(data, split, transform=EvalTransform())
    target = resolve_device(device)
    scores = evaluate(model.to(target), dataset, device=target, save_predictions=save_predictions, progress=progress)
    names = {"checkpoint": str(checkpoint), "model": model.config["model"], "branch": branch, "split": split}
    return {**names, **scores}


def format_scores(scores: dict[str, Any]) -> str:
    """The scores as text: the three means, then a per-class IoU / Dice table."""
    branch = f" ({scores['branch']} branch)" if scores.get("branch") else ""
    lines = [
        f"{scores.get('model', 'model')}{branch} on {scores.get('split', 'split')} ({scores['images']} images)",
        f"mIoU            {scores['miou']:.4f}",
        f"mean Dice       {scores['mdice']:.4f}",
        f"pixel accuracy  {scores['pixel_accuracy']:.4f}",
        "",
        f"{'class':<16}{'IoU':>8}{'Dice':>8}",
    ]
    for name, iou in scores["iou"].items():
        dice = scores["dice"][name]
        cells = ["-" if v is None else f"{v:.4f}" for v in (iou, dice)]
        lines.append(f"{name:<16}{cells[0]:>8}{cells[1]:>8}")
    return "\n".join(lines)
