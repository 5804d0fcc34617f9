"""Helpers of the export tests: tiny zoo models, output dims, real calibration batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from cfnet.models import SegmentationModel, build_model
from export.precision.calibration import image_files

EXPORT_SIZE = (64, 128)



def tiny_model(name: str) -> SegmentationModel:
    torch.manual_seed(0)
    return build_model(name, preset="tiny").eval()



def logits_dims(path: Path) -> list[int | str]:
    """The declared shape of the `logits` output: numbers, or names for dynamic dimensions."""

    output = next(o for o in onnx.load(str(path), load_external_data=False).graph.output if o.name == "logits")
    return [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim]



def real_batches(folder: Path, metadata: dict[str, str]) -> list[np.ndarray]:
    import cv2

    from runtime.artifact import metadata_from_props
    from runtime.preprocess import preprocess

    meta = metadata_from_props(metadata, "test")
    files = [p for p in image_files(folder, 100) if "/val/" in p.as_posix()]
    assert files
    frames = [cv2.imread(str(p)) for p in files]
    return [preprocess(frame, meta)[0] for frame in frames if frame is not None]

