"""The ONNX nodes an export kept in fp32 (`cfnet.fp32_nodes`), pinned to FP32 in a TensorRT 10 network built
with the FP16 flag, as layer precision constraints (the builder obeys them: `OBEY_PRECISION_CONSTRAINTS`).

Which layers a node became, as TensorRT's ONNX parser (onnx-tensorrt) records it:
- every layer it registers for a node carries the metadata `[ONNX Layer: <node name>` + (` | ...`) + `]`
  (`processMetadata`, onnx-tensorrt importerUtils.cpp:2127-2147 at 10.1; onnx2trt_utils.cpp:2474 since 8.6):
  exact, and used whenever a layer has it;
- its name is the node's name, made unique with `_<n>` from one counter shared by the whole parse
  (`ImporterContext::registerLayer`, ImporterContext.cpp:108-126, and `generateUniqueName`,
  weightUtils.cpp:152-164): a node's second layer may be `<node>_37`. Torch's exporter names sibling nodes
  `<op>_1`, `<op>_2`, ..., so by name alone a layer `<node>_<digits>` is the node's only when no node of the
  graph has that name (without the graph's names only exact names match).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorrt as trt

METADATA_KEY = "cfnet.fp32_nodes"
ONNX_LAYER = "[ONNX Layer: "


def fp32_nodes(metadata: Mapping[str, str]) -> list[str]:
    """The ONNX node names an export kept in fp32 (empty when the metadata lists none)."""
    return [str(name) for name in json.loads(metadata.get(METADATA_KEY, "[]"))]


def node_of(layer_metadata: str) -> str | None:
    """The ONNX node a layer was made from, read from the metadata TensorRT's parser gives it (None without)."""
    if not layer_metadata.startswith(ONNX_LAYER):
        return None
    name = layer_metadata[len(ONNX_LAYER) :].split(" | ", 1)[0]
    return name[:-1] if name.endswith("]") else name


def listed_layers(
    layers: Sequence[tuple[str, str]], nodes: Collection[str], graph_nodes: Collection[str] = ()
) -> list[int]:
    """Indices of the layers (name, metadata) that TensorRT's ONNX parser made from the listed `nodes`: by
    the node the metadata names, else by name (exact, or `<node>_<digits>` that no node of `graph_nodes` is
    named: the parser's suffix, not a sibling node's name)."""
    wanted, graph = set(nodes), set(graph_nodes)
    picked = []
    for i, (name, layer_metadata) in enumerate(layers):
        node = node_of(layer_metadata)
        if node is None:
            base, _, suffix = name.rpartition("_")
            node = base if suffix.isdigit() and base in graph and name not in graph else name
        if node in wanted:
            picked.append(i)
    return picked


def pin_listed_layers(
    network: trt.INetworkDefinition, metadata: Mapping[str, str], graph_nodes: Collection[str] = ()
) -> int:
    """Pin the layers of the nodes in `cfnet.fp32_nodes` to FP32 (precision and float outputs); their count.
    `graph_nodes`: the names of the parsed graph's nodes (see `listed_layers`)."""
    import tensorrt as trt

    nodes = fp32_nodes(metadata)
    if not nodes:
        return 0

    layers = [network.get_layer(i) for i in range(network.num_layers)]
    picked = listed_layers([(layer.name, layer.metadata) for layer in layers], nodes, graph_nodes)
    floats = {trt.float32, trt.float16}
    for i in picked:
        layer = layers[i]
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in floats:
                layer.set_output_type(j, trt.float32)
    print(f"TensorRT: {len(picked)} layers of {len(nodes)} nodes kept fp32 at export pinned to FP32", file=sys.stderr)
    return len(picked)
