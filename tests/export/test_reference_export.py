"""`cfnet.reference` written at export from the calibration images, over each image's valid area only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch

from export.metadata import add_reference, get_metadata, set_metadata
from export.onnx import export_onnx
from export.precision.calibration import load_batches
from runtime.backends import read_metadata
from runtime.results.reference import Reference
from tests.export.helpers import EXPORT_SIZE, tiny_model


def test_export_with_calibration_images_stores_the_reference(synth_images: Path, tmp_path: Path) -> None:
    model = tiny_model("unet")
    path = export_onnx(model, tmp_path / "m.onnx", size=EXPORT_SIZE, calib_images=synth_images)
    reference = read_metadata(path).reference
    assert reference is not None and reference.images == 8  # every image of the small folder (8 < 32)
    metadata = get_metadata(onnx.load(str(path)))
    counts = np.zeros(reference.shares.size)
    with torch.no_grad():
        for batch in load_batches(synth_images, metadata, 32):
            labels = model(torch.from_numpy(batch)).argmax(dim=1).numpy()
            counts += np.bincount(labels.ravel(), minlength=counts.size)
    assert np.allclose(reference.shares, counts / counts.sum(), atol=1e-6)
    assert reference.pixels == counts.sum()
    assert read_metadata(export_onnx(model, tmp_path / "plain.onnx", size=EXPORT_SIZE)).reference is None


def test_letterbox_padding_does_not_count(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 1).eval()  # per-pixel: padding changes nothing but the pixels counted
    image = np.random.default_rng(0).standard_normal((1, 3, 24, 40)).astype(np.float32)
    padded = np.zeros((1, 3, 32, 48), np.float32)
    padded[:, :, :24, :40] = image
    proto = onnx.ModelProto()
    set_metadata(proto, {"cfnet.classes": json.dumps(["a", "b", "c", "d"])})
    plain = Reference.from_json(add_reference(proto, model, [image]), 4)  # type: ignore[arg-type]
    boxed = Reference.from_json(add_reference(proto, model, [padded]), 4)  # type: ignore[arg-type]
    assert boxed.pixels == plain.pixels == 24 * 40
    assert np.array_equal(boxed.shares, plain.shares) and np.array_equal(boxed.top1_hist, plain.top1_hist)
    assert json.loads(get_metadata(proto)["cfnet.reference"])["pixels"] == 24 * 40
