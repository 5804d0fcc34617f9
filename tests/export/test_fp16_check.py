"""fp16 with calibration images: the node that overflows in fp16 is found, kept fp32 and reported; TensorRT 10
pins the same list (layer names matched on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from torch import nn

from export.onnx import trace
from export.parity import compare, fp32_ok
from export.precision.autopilot import logits
from export.precision.fp16 import FP16_MAX, convert_to_mixed_fp16
from export.precision.fp16_check import fp16_with_checks
from export.precision.layer_precision import fp32_nodes
from export.precision.sensitivity import float_types


class Overflowing(nn.Module):
    """`big` outputs about 1e5..1e6 (beyond fp16's 65504), scaled back down right after: fine in fp32 only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.big = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 19, 1)
        with torch.no_grad():
            self.stem.weight *= 1e3
            self.big.weight *= 1e3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        return self.head(torch.relu(self.big(x)) * 1e-5)


@pytest.fixture(scope="module")
def overflowing() -> tuple[nn.Module, onnx.ModelProto, list[np.ndarray]]:
    model = Overflowing().eval()
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((1, 3, 32, 32), dtype=np.float32) for _ in range(2)]
    return model, trace(model, (32, 32), batch=1, dynamic=True, opset=17), images


def test_the_overflowing_node_is_kept_fp32_and_named(overflowing: tuple[nn.Module, onnx.ModelProto, list]) -> None:
    model, proto, images = overflowing
    peaks: list[float] = []  # PyTorch's own view: `big` leaves fp16's range (ORT's CPU upcasts fp16, can't show it)
    hook = model.big.register_forward_hook(lambda module, args, out: peaks.append(float(out.abs().max())))
    with torch.no_grad():
        model(torch.from_numpy(np.concatenate(images)))
    hook.remove()
    assert peaks[0] > FP16_MAX
    plain = convert_to_mixed_fp16(proto)
    assert (
        float_types(plain)[next(n for n in plain.graph.node if n.name == "/big/Conv").output[0]] == TensorProto.FLOAT16
    )
    lines: list[str] = []
    half, plan = fp16_with_checks(proto, images, modules={n for n, _ in model.named_modules()}, say=lines.append)
    kept = plan["fp32_nodes"]
    # `big` and the ReLU reading it (a functional op: no module of its own) leave fp16's range
    assert [(k["onnx"], k["module"], k["reason"]) for k in kept] == [
        ("/big/Conv", "big", "overflow"),
        ("/Relu_1", "?", "overflow"),
    ]
    assert kept[0]["max_abs"] == pytest.approx(peaks[0], rel=1e-4)
    assert any("/big/Conv (big) stays fp32: overflow" in line for line in lines)
    types = float_types(half)
    big = next(n for n in half.graph.node if n.name == "/big/Conv")
    assert types[big.output[0]] == TensorProto.FLOAT
    assert types[next(n for n in half.graph.node if n.name == "/head/Conv").output[0]] == TensorProto.FLOAT16
    checked = compare(zip(logits(proto, images), logits(half, images), strict=True))
    assert checked.agreement >= 0.999, checked.line()


def test_fp16_and_fp32_exports_with_calibration_images_store_the_list(
    overflowing: tuple[nn.Module, onnx.ModelProto, list], tmp_path: Path
) -> None:
    from export.metadata import get_metadata
    from export.onnx import export_report

    model, _, images = overflowing
    for precision in ("fp16", "fp32"):
        report = export_report(
            model,
            tmp_path / f"{precision}.onnx",
            size=(32, 32),
            precision=precision,
            calib_images=images,
            simplify=False,
        )
        metadata = get_metadata(onnx.load(str(report.path)))
        assert fp32_nodes(metadata) == ["/big/Conv", "/Relu_1"]
        assert json.loads(metadata["cfnet.precision_plan"])["fp32_nodes"][0]["module"] == "big"
    # the fp32 graph itself is unchanged: it passes the fp32 gate (relative error <= 1e-4, float32 accumulation over
    # these convolutions is ~1e-7; an fp16 graph is ~1e-3). Not `agreement == 1.0`: a pixel whose two best logits
    # tie within float32 rounding may flip wherever the kernels sum in another order.
    assert fp32_ok(report.parity["fp32 calibration"]), report.parity["fp32 calibration"].line()
