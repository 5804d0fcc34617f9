"""FP32 pinning finds the TensorRT layers of exactly the listed ONNX nodes, on a real export's node names.

TensorRT cannot run here, so the parser's naming is replayed as onnx-tensorrt does it: each layer of a node
is registered under the node's name, made unique with `_<n>` from one counter shared by the whole parse
(`generateUniqueName`), and carries the metadata `[ONNX Layer: <node>]` (`processMetadata`).
"""

from __future__ import annotations

import onnx
import pytest

from export.engine_config import read_onnx_input
from export.precision.layer_precision import listed_layers, node_of
from tests.export.helpers import EXPORT_SIZE, tiny_model


@pytest.fixture(scope="module")
def graph_nodes(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The node names of a real export of tiny cfnet-pspnet, in graph order."""
    from export.onnx import export_onnx

    path = export_onnx(tiny_model("cfnet-pspnet"), tmp_path_factory.mktemp("pin") / "m.onnx", size=EXPORT_SIZE)
    names = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]
    assert set(names) == read_onnx_input(path).nodes  # what `build_engine` hands to the pinning
    return names


def parsed(nodes: list[str], layers_per_node: int = 2) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, metadata) of the layers TensorRT's parser would make, `layers_per_node` per node (a Conv and its
    bias add, say), and the node each came from."""
    taken: set[str] = set()
    counter = 0
    layers, owners = [], []
    for node in nodes:
        for _ in range(layers_per_node):
            name = node
            while name in taken:  # generateUniqueName (onnx-tensorrt weightUtils.cpp)
                name = f"{node}_{counter}"
                counter += 1
            taken.add(name)
            layers.append((name, f"[ONNX Layer: {node}]"))
            owners.append(node)
    return layers, owners


def test_torch_names_sibling_nodes_like_the_parsers_suffixes(graph_nodes: list[str]) -> None:
    """The case that pinned siblings: `X` and `X_1` are two nodes of the export."""
    names = set(graph_nodes)
    siblings = [n for n in names if n.rpartition("_")[2].isdigit() and n.rpartition("_")[0] in names]
    assert len(siblings) > 20


def test_pinning_one_node_pins_its_layers_only(graph_nodes: list[str]) -> None:
    layers, owners = parsed(graph_nodes)
    for node in graph_nodes:
        mine = [i for i, owner in enumerate(owners) if owner == node]
        assert listed_layers(layers, [node], graph_nodes) == mine, node


def test_by_name_alone_a_sibling_node_is_not_a_suffix(graph_nodes: list[str]) -> None:
    """Without the parser's metadata, `X_<digits>` is `X`'s layer only when no node is named so."""
    layers, owners = parsed(graph_nodes)
    names_only = [(name, "") for name, _ in layers]
    names = set(graph_nodes)
    siblings = [n for n in graph_nodes if n.rpartition("_")[2].isdigit() and n.rpartition("_")[0] in names]
    for sibling in siblings:
        node = sibling.rpartition("_")[0]
        picked = {owners[i] for i in listed_layers(names_only, [node], graph_nodes)}
        assert sibling not in picked
        assert node in picked
    # the parser's own suffixes are found: every layer of a node whose suffixed names no node has
    clean = [n for n in graph_nodes if not any(layers[i][0] in names and owners[i] != n
                                               for i in range(len(layers)) if owners[i] == n)]
    for node in clean[:50]:
        assert listed_layers(names_only, [node], graph_nodes) == [i for i, o in enumerate(owners) if o == node]


def test_the_parsers_metadata_names_the_node() -> None:
    assert node_of("[ONNX Layer: /big/Conv]") == "/big/Conv"
    assert node_of("[ONNX Layer: /big/Conv | Local Function: f]") == "/big/Conv"
    assert node_of("[ONNX Layer: /big/Conv | x = self.big(x)]") == "/big/Conv"
    assert node_of("") is None
    layers = [("/big/Conv", "[ONNX Layer: /big/Conv]"), ("/big/Conv_1", "[ONNX Layer: /big/Conv_1]"),
              ("/big/Conv_7", "[ONNX Layer: /big/Conv]"), ("(Unnamed Layer* 3) [Constant]", "")]
    assert listed_layers(layers, ["/big/Conv"]) == [0, 2]
    assert listed_layers(layers, []) == []
    assert listed_layers([(name, "") for name, _ in layers], ["/big/Conv"]) == [0]  # no graph: exact names
