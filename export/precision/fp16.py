"""A mixed-precision fp16 ONNX for TensorRT 11's strongly typed networks (the graph's types are the precision).

Convolutions and matrix products run in fp16. Cheap ops whose float inputs all are already fp16 (activations,
data movement, residual adds) follow them, so chains of convolutions need no casts in between. Everything
else stays fp32: LayerNormalization, Softmax, reductions, BatchNorm and normalisation arithmetic, Resize and
any op not listed. Graph inputs and outputs stay fp32; `Cast` nodes sit at every fp32/fp16 boundary.
Weights consumed by fp16 ops become fp16 initializers. onnxconverter-common is not used: its converter
emits graphs ONNX Runtime refuses (mixed-type Conv, Identity on initializers).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP16_COMPUTE = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
FP16_FOLLOW = frozenset(
    {
        "Add",
        "Mul",
        "Relu",
        "LeakyRelu",
        "Clip",
        "Sigmoid",
        "MaxPool",
        "Concat",
        "Split",
        "Slice",
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Gather",
    }
)
SHAPE_ONLY = frozenset({"Shape", "Size"})  # read an input's shape, not its values: any type will do
FP16_MAX = float(np.finfo(np.float16).max)


def convert_to_mixed_fp16(model: onnx.ModelProto, keep_fp32: Collection[str] = ()) -> onnx.ModelProto:
    """Return a copy of fp32 `model` with fp16 compute as described in the module docstring; the nodes named in
    `keep_fp32` stay fp32 whatever their op (those `export.precision.fp16_check` finds overflowing or inaccurate)."""
    model = _constants_to_initializers(model)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    pass_ = _Pass(inferred, frozenset(keep_fp32))
    graph = model.graph
    nodes = pass_.run(list(graph.node), [o.name for o in graph.output])
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + [init for init in pass_.new_initializers if init.name in used])
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def fp16_node_count(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type produce fp16 outputs (for reports and tests)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = _elem_types(inferred)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Cast" and any(types.get(o) == TensorProto.FLOAT16 for o in node.output):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


class _Pass:
    def __init__(self, inferred: onnx.ModelProto, keep_fp32: frozenset[str]) -> None:
        self.keep_fp32 = keep_fp32
        self.types = _elem_types(inferred)
        self.initializers = {init.name: init for init in inferred.graph.initializer}
        self.half: dict[str, str] = {}  # fp32 tensor -> its fp16 twin (cast or converted initializer)
        self.full: dict[str, str] = {}  # fp16 tensor -> its fp32 twin
        self.new_initializers: list[onnx.TensorProto] = []
        self.emitted: list[onnx.NodeProto] = []
        self.names: set[str] = set(self.types) | set(self.initializers)

    def run(self, nodes: list[onnx.NodeProto], outputs: list[str]) -> list[onnx.NodeProto]:
        for node in nodes:
            if node.op_type in SHAPE_ONLY:
                pass
            elif self._runs_in_fp16(node):
                self._to_fp16(node)
            else:
                self._to_fp32(node)
            self.emitted.append(node)
        for name in outputs:
            if self.types.get(name) == TensorProto.FLOAT16:
                self._restore_fp32_output(name)
        return self.emitted

    def _float_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [
            name for name in node.input if name and self.types.get(name) in (TensorProto.FLOAT, TensorProto.FLOAT16)
        ]

    def _runs_in_fp16(self, node: onnx.NodeProto) -> bool:
        if node.name in self.keep_fp32:
            return False
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            return False
        if node.op_type in FP16_COMPUTE:
            return True
        if node.op_type not in FP16_FOLLOW:
            return False
        floats = self._float_inputs(node)
        activations = [n for n in floats if n not in self.initializers]
        return bool(activations) and all(self.types[n] == TensorProto.FLOAT16 for n in activations)

    def _to_fp16(self, node: onnx.NodeProto) -> None:
        for i, name in enumerate(node.input):
            if name and self.types.get(name) == TensorProto.FLOAT:
                node.input[i] = self._half_of(name)
        for name in node.output:
            if self.types.get(name) == TensorProto.FLOAT:
                self.types[name] = TensorProto.FLOAT16

    def _to_fp32(self, node: onnx.NodeProto) -> None:
        for i, name in enumerate(node.input):
            if name and self.types.get(name) == TensorProto.FLOAT16:
                node.input[i] = self._full_of(name)

    def _half_of(self, name: str) -> str:
        if name not in self.half:
            twin = self._fresh(f"{name}__fp16")
            if name in self.initializers:
                values = numpy_helper.to_array(self.initializers[name])
                half = np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)
                self.new_initializers.append(numpy_helper.from_array(half, twin))
            else:
                self.emitted.append(helper.make_node("Cast", [name], [twin], to=TensorProto.FLOAT16, name=twin))
            self.types[twin] = TensorProto.FLOAT16
            self.half[name] = twin
        return self.half[name]

    def _full_of(self, name: str) -> str:
        if name not in self.full:
            twin = self._fresh(f"{name}__fp32")
            self.emitted.append(helper.make_node("Cast", [name], [twin], to=TensorProto.FLOAT, name=twin))
            self.types[twin] = TensorProto.FLOAT
            self.full[name] = twin
            self.half[twin] = name  # casting back to fp16 is lossless: reuse the fp16 original
        return self.full[name]

    def _restore_fp32_output(self, name: str) -> None:
        inner = self._fresh(f"{name}__fp16")
        for node in self.emitted:
            for i, value in enumerate(node.input):
                if value == name:
                    node.input[i] = inner
            for i, value in enumerate(node.output):
                if value == name:
                    node.output[i] = inner
        self.emitted.append(helper.make_node("Cast", [inner], [name], to=TensorProto.FLOAT, name=f"{name}__cast"))
        self.types[inner], self.types[name] = TensorProto.FLOAT16, TensorProto.FLOAT

    def _fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}{i}"
        self.names.add(name)
        return name


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


def _constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of `model` where `Constant` nodes holding a tensor became initializers (they can then be converted)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    kept = []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and value.type == onnx.AttributeProto.TENSOR:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model
