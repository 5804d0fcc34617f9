"""The `cfnet.*` metadata_props of an exported ONNX model: everything the runtime needs besides the graph."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
