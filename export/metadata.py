"""The `cfnet.*` metadata_props of an exported ONNX model: everything the runtime needs besides the graph."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import cfnet
from cfnet.data.labels import MEAN, PALETTE, STD, TRAIN_CLASSES
from cfnet.errors import UserError
from cfnet.models.base import SegmentationModel
from runtime.cpu import PATH_KEY, WEIGHTS_KEY

PRECISIONS = ("fp32", "fp16", "int8")


def build_metadata(model: SegmentationModel, size: tuple[int, int], precision: str) -> dict[str, str]:
    """The metadata of `model` exported at `size` (H, W) in `precision`; every value is a string. A fused
    model's branch exported alone (`config["branch"]`) is named by `cfnet.branch`."""
    config = getattr(model, "config", {})
    num_classes = int(config.get("num_classes", len(TRAIN_CLASSES)))
    if num_classes == len(TRAIN_CLASSES):
        classes, palette = list(TRAIN_CLASSES), [list(c) for c in PALETTE]
    else:
        classes = [f"class{i}" for i in range(num_classes)]
        palette = [list(PALETTE[i % len(PALETTE)]) for i in range(num_classes)]
    branch = {"cfnet.branch": str(config["branch"])} if "branch" in config else {}
    return {
        **branch,
        "cfnet.model": str(config.get("model", type(model).__name__)),
        "cfnet.preset": str(config.get("preset", "unknown")),
        "cfnet.classes": json.dumps(classes),
        "cfnet.palette": json.dumps(palette),
        "cfnet.mean": json.dumps(list(MEAN)),
        "cfnet.std": json.dumps(list(STD)),
        "cfnet.input_size": f"{size[0]}x{size[1]}",
        "cfnet.size_divisor": str(int(getattr(model, "size_divisor", 1))),
        "cfnet.precision": precision,
        "cfnet.version": cfnet.__version__,
    }


def plan_metadata(plan: Mapping[str, Any]) -> dict[str, str]:
    """`cfnet.precision_plan` (how the precision was chosen, JSON) and `cfnet.fp32_nodes` (JSON list of the ONNX
    node names kept in fp32, which `build-engine` pins to FP32 on TensorRT 10) of a precision plan; for int8 also
    `cfnet.int8_cpu_path` (the int8 path of the CPU that measured the agreement) and `cfnet.int8_weights`."""
    if not plan:
        return {}
    names = [node["onnx"] for node in plan.get("fp32_nodes", [])]
    flat = {"cfnet.precision_plan": json.dumps(plan), "cfnet.fp32_nodes": json.dumps(names)}
    if "int8_target" in plan:  # what the runtime reads before it runs an int8 file (runtime/cpu.py)
        flat.update({PATH_KEY: plan["cpu_int8_path"], WEIGHTS_KEY: plan["int8_weights"]})
    return flat


def set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    """Replace the `cfnet.*` metadata_props of `proto` with `metadata` (other entries are kept)."""
    kept = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith("cfnet.")]
    del proto.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def get_metadata(proto: onnx.ModelProto) -> dict[str, str]:
    """The `cfnet.*` metadata_props of `proto`."""
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith("cfnet.")}


def load_onnx(path: str | Path, *, weights: bool = True) -> onnx.ModelProto:
    """Read an ONNX file; a missing or non-ONNX file is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError("ONNX model not found", str(path))
    try:
        proto = onnx.load(str(path), load_external_data=weights)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning-wrapped errors, OSError...
        raise UserError(f"not an ONNX model ({type(exc).__name__})", str(path)) from None
    if not proto.graph.node or not proto.graph.input or not proto.graph.output:
        raise UserError("not an ONNX model (no graph)", str(path))
    return proto


def size_divisor(metadata: Mapping[str, str]) -> int:
    """`cfnet.size_divisor` as an int (1 when absent)."""
    return int(metadata.get("cfnet.size_divisor", "1"))


def reference_images(
    calib_images: str | Path | Iterable[np.ndarray], loaded: list[np.ndarray], metadata: dict[str, str], count: int
) -> list[np.ndarray]:
    """The preprocessed images `cfnet.reference` is computed on: `count` images of a calibration folder (spread as
    calibration spreads them), or the arrays the export already loaded (an iterable of arrays reads only once)."""
    if isinstance(calib_images, str | Path) and len(loaded) < count:
        from export.precision.calibration import load_batches

        return load_batches(calib_images, metadata, count)
    return loaded


def add_reference(proto: onnx.ModelProto, model: SegmentationModel, batches: Iterable[np.ndarray]) -> str:
    """Compute `cfnet.reference` (`runtime.results.reference`: class shares and top-1 probability histogram) of
    `model` on preprocessed `N x 3 x H x W` batches, set it in `proto`'s metadata and return it.

    Only each image's valid area counts: the letterbox padding (trailing rows and columns that are exactly 0 in
    every channel after normalisation; no real pixel is, as 255 * mean is not a whole number) is cropped off
    the logits, in proportion when they are smaller than the input.
    """
    import torch

    from runtime.results.reference import ReferenceBuilder

    num_classes = len(json.loads(get_metadata(proto)["cfnet.classes"]))
    builder = ReferenceBuilder(num_classes)
    with torch.no_grad():
        for batch in batches:
            logits = model(torch.from_numpy(np.ascontiguousarray(batch, np.float32))).float().numpy()
            for image, scores in zip(batch, logits, strict=True):
                height, width = _valid_extent(image)
                rows = -(-height * scores.shape[1] // image.shape[1])
                cols = -(-width * scores.shape[2] // image.shape[2])
                builder.add(scores[:, :rows, :cols])
    reference = builder.build().to_json()
    set_metadata(proto, {**get_metadata(proto), "cfnet.reference": reference})
    return reference


def _valid_extent(image: np.ndarray) -> tuple[int, int]:
    """(rows, columns) of a preprocessed `3 x H x W` image before its all-zero bottom/right padding."""
    rows = np.flatnonzero(np.any(image != 0, axis=(0, 2)))
    cols = np.flatnonzero(np.any(image != 0, axis=(0, 1)))
    return (int(rows[-1]) + 1 if rows.size else image.shape[1], int(cols[-1]) + 1 if cols.size else image.shape[2])
