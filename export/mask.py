"""In-graph masks: `ArgMax` over the classes and a cast to uint8 appended to an exported graph, and their parity.

A graph with a `mask` output returns `N x H x W` uint8 class ids (1 byte a pixel instead of the logits' 4 x C):
on a GPU the device-to-host copy and the host argmax shrink to a 1/4C copy. TensorRT's ONNX parser maps
`ArgMax` to a TopK layer (k = 1) and the cast to a cast layer; ONNX Runtime runs both on every provider.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OUTPUTS = ("logits", "mask", "both")
LOGITS, MASK = "logits", "mask"
MASK_TIE_MARGIN = 1e-3
"""Pixels whose two largest reference logits differ by at most this (absolute, logit units) are ties: an fp32
graph's logits deviate from PyTorch's by ~1e-5 (parity's max |Δ|), so only there may the argmax differ."""


def output_names(output: str) -> list[str]:
    """The graph outputs of `--output logits|mask|both`, in graph order."""
    return {"logits": [LOGITS], "mask": [MASK], "both": [LOGITS, MASK]}[output]


def outputs_metadata(output: str) -> dict[str, str]:
    """The `cfnet.outputs` metadata entry: a JSON list of the graph's outputs."""
    return {"cfnet.outputs": json.dumps(output_names(output))}


def add_mask_output(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `proto` (output `logits`, `N x C x H x W`) with a second output `mask`: uint8 `N x H x W`, the
    index of the largest logit per pixel (the first on ties, as `np.argmax`)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    logits = next((o for o in graph.output if o.name == LOGITS), None)
    if logits is None:
        raise ValueError(f"the graph has no '{LOGITS}' output (outputs: {[o.name for o in graph.output]})")
    if any(o.name == MASK for o in graph.output):
        return model
    graph.node.extend(
        [
            helper.make_node("ArgMax", [LOGITS], ["mask_index"], name="mask_argmax", axis=1, keepdims=0),
            helper.make_node("Cast", ["mask_index"], [MASK], name="mask_cast", to=TensorProto.UINT8),
        ]
    )
    dims = list(logits.type.tensor_type.shape.dim)
    shape = [d.dim_param or d.dim_value or None for d in (dims[0], *dims[2:])] if len(dims) == 4 else None
    graph.output.append(helper.make_tensor_value_info(MASK, TensorProto.UINT8, shape))
    return model


def select_outputs(proto: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """`proto` (which has `logits` and `mask`) keeping only the outputs of `--output` (in place, returned)."""
    kept = output_names(output)
    outputs = [o for o in proto.graph.output if o.name in kept]
    del proto.graph.output[:]
    proto.graph.output.extend(outputs)
    return proto


@dataclass(frozen=True)
class MaskParity:
    """An exported mask against the argmax of the reference logits, on the pixels that are not ties."""

    agreement: float
    pixels: int
    ties: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def line(self) -> str:
        return (
            f"mask = argmax of PyTorch's logits on {100 * self.agreement:.4f}% of {self.pixels} pixels "
            f"({self.ties} ties within {MASK_TIE_MARGIN:g} left out)"
        )


def compare_masks(pairs: Iterable[tuple[np.ndarray, np.ndarray]], margin: float = MASK_TIE_MARGIN) -> MaskParity:
    """Compare (reference `N x C x H x W` logits, candidate `N x H x W` mask) pairs, pooled, away from ties."""
    same, pixels, ties = 0, 0, 0
    for logits, mask in pairs:
        if mask.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(f"mask shape {mask.shape} does not match logits {logits.shape}")
        top2 = np.partition(logits, -2, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > margin
        same += int((logits.argmax(axis=1) == mask)[clear].sum())
        pixels += int(clear.sum())
        ties += int(clear.size - clear.sum())
    return MaskParity(same / pixels if pixels else 1.0, pixels, ties)


def write_mask_variant(logits_onnx: Path, out: Path, output: str = "mask") -> Path:
    """Write `logits_onnx` (an export with output `logits`) to `out` with the outputs of `output` (the same
    network and metadata, `cfnet.outputs` updated): what `export_onnx(..., output=...)` writes, without
    tracing again."""
    from cfnet.atomic import write_bytes
    from export.metadata import get_metadata, set_metadata

    proto = select_outputs(add_mask_output(onnx.load(str(logits_onnx))), output)
    set_metadata(proto, {**get_metadata(proto), **outputs_metadata(output)})
    onnx.checker.check_model(proto, full_check=True)
    write_bytes(out, proto.SerializeToString())
    return out
