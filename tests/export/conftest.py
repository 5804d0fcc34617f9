"""Shared fixtures: every zoo model (tiny) exported once per session at a small size, synthetic images."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfnet.models import MODEL_NAMES, SegmentationModel
from tests.export.helpers import EXPORT_SIZE, tiny_model


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[SegmentationModel, Path]]:
    """Each zoo model (tiny) and its dynamic fp32 ONNX at 64x128, through `export_onnx`."""
    from export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    result = {}
    for name in MODEL_NAMES:
        model = tiny_model(name)
        result[name] = (model, export_onnx(model, folder / f"{name}.onnx", size=EXPORT_SIZE))
    return result


@pytest.fixture(scope="session")
def synth_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic Cityscapes-layout folder (realistic street scenes for calibration and parity)."""
    from cfnet.data.synth import synthesize

    return Path(synthesize(tmp_path_factory.mktemp("synth") / "data", train=6, val=2, size=(128, 256), seed=0))
