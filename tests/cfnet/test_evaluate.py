"""`evaluate` against a brute-force per-class count, result PNGs, and `cfnet evaluate` on good and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cfnet.checkpoint import save_checkpoint
from cfnet.cli import main
from cfnet.data.cityscapes import CityscapesDataset
from cfnet.data.labels import ID_TO_TRAIN_ID, TRAIN_CLASSES
from cfnet.data.synth import synthesize
from cfnet.data.transforms import EvalTransform
from cfnet.evaluate import evaluate, predict_logits
from cfnet.models import build_model
from cfnet.models.base import SegmentationModel


class PixelClassifier(SegmentationModel):
    """Stand-in model: a random 1x1 convolution (varied per-pixel classes); checks the size divisor."""

    def __init__(self, divisor: int = 1) -> None:
        super().__init__()
        self.size_divisor = divisor
        self.conv = nn.Conv2d(3, len(TRAIN_CLASSES), 1)
        self.config = {"model": "stand-in", "preset": "tiny", "num_classes": len(TRAIN_CLASSES)}

    def forward(self, x: Tensor) -> Tensor:
        assert x.shape[-2] % self.size_divisor == 0 and x.shape[-1] % self.size_divisor == 0
        return self.conv(x)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("evaluate") / "synth", train=1, val=3, size=(64, 128), seed=1, workers=1)


def _brute_force(model: nn.Module, dataset: CityscapesDataset) -> dict[str, object]:
    """Per-class TP, FP, FN counted pixel by pixel with boolean masks, summed over the split."""
    classes = len(TRAIN_CLASSES)
    tp, fp, fn = np.zeros(classes), np.zeros(classes), np.zeros(classes)
    correct = counted = 0
    for image, label in (dataset[i] for i in range(len(dataset))):
        with torch.no_grad():
            pred = model(image[None])[0].argmax(0).numpy()
        truth = label.numpy()
        valid = truth != 255
        correct += int((pred[valid] == truth[valid]).sum())
        counted += int(valid.sum())
        for c in range(classes):
            tp[c] += np.sum((pred == c) & (truth == c) & valid)
            fp[c] += np.sum((pred == c) & (truth != c) & valid)
            fn[c] += np.sum((pred != c) & (truth == c) & valid)
    present = tp + fp + fn > 0
    iou = tp[present] / (tp + fp + fn)[present]
    dice = 2 * tp[present] / (2 * tp + fp + fn)[present]
    return {"miou": iou.mean(), "mdice": dice.mean(), "pixel_accuracy": correct / counted, "present": present}


def test_scores_equal_a_brute_force_count(data: Path) -> None:
    torch.manual_seed(0)
    model = PixelClassifier().eval()
    dataset = CityscapesDataset(data, "val", transform=EvalTransform())
    scores = evaluate(model, dataset)
    expected = _brute_force(model, dataset)
    assert int(np.sum(expected["present"])) >= 5  # predictions and labels span several classes
    for key in ("miou", "mdice", "pixel_accuracy"):
        assert scores[key] == pytest.approx(expected[key], abs=1e-12), key
    absent = [name for name, p in zip(TRAIN_CLASSES, expected["present"], strict=True) if not p]
    assert all(scores["iou"][name] is None for name in absent)
    assert scores["images"] == 3


def test_inputs_are_padded_to_the_size_divisor_and_logits_cropped() -> None:
    torch.manual_seed(0)
    model = PixelClassifier(divisor=32).eval()
    images = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        logits = predict_logits(model, images)
        assert logits.shape == (1, len(TRAIN_CLASSES), 50, 70)
        assert torch.allclose(logits, model.conv(images), atol=1e-6)  # a 1x1 conv: padding changes nothing kept


def test_saved_predictions_are_label_id_pngs_under_result_names(data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PixelClassifier().eval()
    dataset = CityscapesDataset(data, "val", transform=EvalTransform())
    evaluate(model, dataset, save_predictions=tmp_path / "pred")
    images = sorted((data / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [p.name for p in images]
    for index, sample in enumerate(dataset.samples):
        written = cv2.imread(str(tmp_path / "pred" / sample.result_name), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint8 and written.ndim == 2
        with torch.no_grad():
            pred = model(dataset[index][0][None])[0].argmax(0).numpy()
        assert np.array_equal(ID_TO_TRAIN_ID[written], pred)  # labelIds that map back to the predicted trainIds
        assert written.max() > 18  # labelIds, not trainIds (e.g. car = 26)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", preset="tiny")
    config = {**model.config, "crop": [64, 64], "lr": 1e-4}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "unet.pt", model=model, iteration=1, config=config)


def test_cli_json_matches_the_python_api(data: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _cli(capsys, "evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--json")
    assert code == 0, err
    scores = json.loads(out)
    model = build_model("unet", preset="tiny")
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    expected = evaluate(model.eval(), CityscapesDataset(data, "val", transform=EvalTransform()))
    assert scores["miou"] == pytest.approx(expected["miou"], abs=1e-12)
    assert scores["model"] == "unet" and scores["split"] == "val" and list(scores["iou"]) == list(TRAIN_CLASSES)
    code, out, _ = _cli(capsys, "evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "train")
    assert code == 0 and "mIoU" in out and "road" in out and "(1 images)" in out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("other-model", "error: checkpoint holds model 'unet', expected 'cfnet-pspnet' ({ckpt})"),
        ("corrupt", "error: corrupt or unreadable cfnet checkpoint ({bad})"),
        ("missing-checkpoint", "error: checkpoint not found ({missing})"),
        ("missing-data", "error: data folder not found ({missing})"),
        ("missing-split", "error: no 'test' split: folder missing ({data}/leftImg8bit/test)"),
        ("preds-in-a-file", "error: cannot create the output: {bad} is a file, not a folder ({bad}/p)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    data: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, case: str, message: str
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(checkpoint.read_bytes()[:1000])
    paths = {"ckpt": str(checkpoint), "bad": str(bad), "missing": str(tmp_path / "missing"), "data": str(data)}
    args = {
        "other-model": ["--checkpoint", str(checkpoint), "--data", str(data), "--model", "cfnet-pspnet"],
        "corrupt": ["--checkpoint", str(bad), "--data", str(data)],
        "missing-checkpoint": ["--checkpoint", paths["missing"], "--data", str(data)],
        "missing-data": ["--checkpoint", str(checkpoint), "--data", paths["missing"]],
        "missing-split": ["--checkpoint", str(checkpoint), "--data", str(data), "--split", "test"],
        "preds-in-a-file": ["--checkpoint", str(checkpoint), "--data", str(data), "--save-predictions", f"{bad}/p"],
    }[case]
    code, out, err = _cli(capsys, "evaluate", *args)
    assert code == 2 and out == ""
    assert err.strip() == message.format(**paths)
