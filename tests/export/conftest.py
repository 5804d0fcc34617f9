"""Shared fixtures: every zoo model (tiny) exported once per session at a small size, synthetic images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cfnet.models import MODEL_NAMES, SegmentationModel, build_model

EXPORT_SIZE = (64, 128)


def tiny_model(name: str) -> SegmentationModel:
    torch.manual_seed(0)
    return build_model(name, preset="tiny").eval()


def logits_dims(path: Path) -> list[int | str]:
    """The declared shape of the `logits` output: numbers, or names for dynamic dimensions."""
    import onnx

    output = next(o for o in onnx.load(str(path), load_external_data=False).graph.output if o.name == "logits")
    return [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim]


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
