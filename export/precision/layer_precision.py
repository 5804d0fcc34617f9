"""The ONNX nodes an export kept in fp32 (`cfnet.fp32_nodes`), pinned to FP32 in a TensorRT 10 network built
with the FP16 flag, as layer precision constraints (the builder obeys them: `OBEY_PRECISION_CONSTRAINTS`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorrt as trt

METADATA_KEY = "cfnet.fp32_nodes"


def fp32_nodes(metadata: Mapping[str, str]) -> list[str]:
    """The ONNX node names an export kept in fp32 (empty when the metadata lists none)."""
    return [str(name) for name in json.loads(metadata.get(METADATA_KEY, "[]"))]


def listed_layers(layer_names: Sequence[str], nodes: Sequence[str]) -> list[int]:
    """Indices of the layers TensorRT's ONNX parser made from the listed nodes: it names a node's layer after
    the node, and the extra layers of one node `<node>_<suffix>` (e.g. a Conv's bias add)."""
    wanted = set(nodes)
    return [i for i, name in enumerate(layer_names) if name in wanted or name.rsplit("_", 1)[0] in wanted]


def pin_listed_layers(network: trt.INetworkDefinition, metadata: Mapping[str, str]) -> int:
    """Pin the layers of the nodes in `cfnet.fp32_nodes` to FP32 (precision and float outputs); their count."""
    import tensorrt as trt

    nodes = fp32_nodes(metadata)
    if not nodes:
        return 0

    layers = [network.get_layer(i) for i in range(network.num_layers)]
    picked = listed_layers([layer.name for layer in layers], nodes)
    floats = {trt.float32, trt.float16}
    for i in picked:
        layer = layers[i]
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in floats:
                layer.set_output_type(j, trt.float32)
    print(f"TensorRT: {len(picked)} layers of {len(nodes)} nodes kept fp32 at export pinned to FP32", file=sys.stderr)
    return len(picked)
