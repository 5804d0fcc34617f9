"""Mixed fp16 and int8 QDQ artifacts: they load in ONNX Runtime (CPU), keep the right ops in fp32, and agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from cfnet.models import MODEL_NAMES, SegmentationModel
from export.onnx import export_onnx
from export.parity import compare
from export.precision.fp16 import convert_to_mixed_fp16
from runtime.cpu import int8_path
from tests.export.helpers import logits_dims, real_batches

FP32_OPS = {"LayerNormalization", "Softmax", "Resize", "BatchNormalization", "ReduceMean", "ReduceSum", "Erf", "Div"}
FP16_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def _session(proto: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _types(proto: onnx.ModelProto) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(proto).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({i.name: i.data_type for i in graph.initializer})
    return types


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_mixed_fp16_keeps_normalisation_in_fp32_and_agrees(
    name: str, exported: dict[str, tuple[SegmentationModel, Path]]
) -> None:
    _, path = exported[name]
    fp32 = onnx.load(str(path))
    half = convert_to_mixed_fp16(fp32)
    onnx.checker.check_model(half, full_check=True)
    types = _types(half)
    assert types[half.graph.input[0].name] == TensorProto.FLOAT
    assert types[half.graph.output[0].name] == TensorProto.FLOAT
    converted = 0
    for node in half.graph.node:
        floats = [types[i] for i in node.input if i and types.get(i) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        if node.op_type in FP16_OPS:
            assert set(floats) == {TensorProto.FLOAT16}, node.name
            converted += 1
        elif node.op_type in FP32_OPS or node.op_type.startswith("Reduce"):
            assert set(floats) <= {TensorProto.FLOAT}, node.name
    assert converted == sum(n.op_type in FP16_OPS for n in fp32.graph.node) > 0
    rng = np.random.default_rng(2)
    inputs = [
        rng.standard_normal((1, 3, 64, 128), dtype=np.float32),
        rng.standard_normal((2, 3, 96, 96), dtype=np.float32),
    ]
    full, mixed = _session(fp32), _session(half)
    parity = compare((full.run(None, {"images": x})[0], mixed.run(None, {"images": x})[0]) for x in inputs)
    assert parity.agreement >= 0.995, parity.line()


def test_fp16_export_writes_fp16_metadata(tmp_path: Path) -> None:
    from tests.export.helpers import tiny_model

    path = export_onnx(tiny_model("segformer"), tmp_path / "seg16.onnx", size=(64, 64), precision="fp16")
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["cfnet.precision"] == "fp16"
    assert any(i.data_type == TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert logits_dims(path) == ["batch", 19, "height", "width"]


def test_the_latency_line_says_faster_or_slower() -> None:
    from export.onnx import latency_line

    assert latency_line("int8", 395, 312).endswith("int8 395.0 ms vs fp32 312.0 ms: int8 is 1.27x slower than fp32")
    assert latency_line("int8", 156, 312).endswith(": int8 is 2.00x faster than fp32")
    assert latency_line("fp16", 312.4, 312).endswith(": fp16 is as fast as fp32")


def test_int8_export_is_qdq_and_agrees_on_real_images(tmp_path: Path, synth_images: Path) -> None:
    from tests.export.helpers import tiny_model

    model = tiny_model("pspnet")
    path = export_onnx(model, tmp_path / "psp8.onnx", size=(64, 128), precision="int8", calib_images=synth_images)
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["cfnet.precision"] == "int8"
    assert (props["cfnet.int8_weights"], props["cfnet.int8_cpu_path"]) == ("uint8", int8_path())  # runtime/cpu.py
    assert logits_dims(path) == ["batch", 19, "height", "width"]
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weights = {i.name for i in proto.graph.initializer if i.data_type == TensorProto.UINT8 and len(i.dims) >= 2}
    dequantised = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    assert dequantised
    readers = {n.op_type for n in proto.graph.node if dequantised.intersection(n.input)}
    assert readers <= FP16_OPS  # only convolutions and matrix products have int8 weights
    session = _session(proto)
    pairs = []
    for x in real_batches(synth_images, props):
        with torch.no_grad():
            pairs.append((model(torch.from_numpy(x)).numpy(), session.run(["logits"], {"images": x})[0]))
    parity = compare(pairs)
    assert parity.agreement >= 0.99, parity.line()
