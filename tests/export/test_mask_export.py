"""`export_onnx(..., output="mask"|"both")`: the in-graph argmax equals PyTorch's argmax away from ties, for
every zoo model; fp16 and int8 mask exports load in the runtime; TensorRT 11's fp16 copy keeps the mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from cfnet.models import MODEL_NAMES
from export.onnx import export_report
from export.tensorrt import _fp16_copy
from runtime.backends import open_backend
from tests.export.helpers import tiny_model

TIE = 1e-3  # the documented tie margin (export.mask.MASK_TIE_MARGIN), restated: the test is its own reference


def _clear_pixels(logits: np.ndarray) -> np.ndarray:
    """Pixels whose two largest logits differ by more than `TIE` (sorted independently of export.mask)."""
    ordered = np.sort(logits, axis=1)
    return (ordered[:, -1] - ordered[:, -2]) > TIE


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_mask_export_equals_pytorch_argmax_away_from_ties(name: str, tmp_path: Path) -> None:
    model = tiny_model(name)
    report = export_report(model, tmp_path / f"{name}.onnx", size=(32, 64), output="mask", log=lambda _: None)
    proto = onnx.load(str(report.path))
    assert [o.name for o in proto.graph.output] == ["mask"]
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert json.loads(report.metadata["cfnet.outputs"]) == ["mask"]
    assert report.mask_parity["fp32"].agreement == 1.0
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    divisor = model.size_divisor
    x = np.random.default_rng(5).standard_normal((2, 3, 64, 3 * max(divisor, 16)), dtype=np.float32)  # not 32x64
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    (mask,) = session.run(None, {"images": x})
    assert mask.dtype == np.uint8 and mask.shape == (2, *x.shape[2:])
    clear = _clear_pixels(logits)
    assert clear.mean() > 0.5  # most pixels are compared
    np.testing.assert_array_equal(mask[clear], logits.argmax(axis=1)[clear])


def test_both_keeps_logits_beside_the_mask_and_the_runtime_reads_the_mask(tmp_path: Path) -> None:
    from cfnet.cli import main

    out = tmp_path / "both.onnx"
    with pytest.raises(SystemExit) as exited:
        main(["export", "onnx", "--model", "hrnet", "--preset", "tiny", "--out", str(out), "--size", "64x64",
              "--output", "both"])
    assert exited.value.code in (0, None)
    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == ["logits", "mask"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["cfnet.outputs"]) == ["logits", "mask"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    logits, mask = session.run(["logits", "mask"], {"images": x})
    np.testing.assert_array_equal(mask, logits.argmax(axis=1))
    with open_backend(out, device="cpu") as backend:
        np.testing.assert_array_equal(backend.infer(x), mask)


def test_fp16_and_int8_mask_exports_load_and_agree(tmp_path: Path, synth_images: Path) -> None:
    from tests.export.helpers import real_batches

    for name, precision in (("segformer", "fp16"), ("pspnet", "int8")):
        model = tiny_model(name)
        report = export_report(model, tmp_path / f"{name}-{precision}.onnx", size=(64, 128), precision=precision,
                               calib_images=synth_images, output="mask", log=lambda _: None)
        assert report.metadata["cfnet.precision"] == precision
        assert report.mask_parity[precision].pixels > 0
        agree, pixels = 0, 0
        with open_backend(report.path, device="cpu") as backend:
            for x in real_batches(synth_images, report.metadata):
                mask = backend.infer(x)
                assert mask.dtype == np.uint8 and mask.shape == (1, *x.shape[2:])
                with torch.no_grad():
                    reference = model(torch.from_numpy(x)).numpy().argmax(axis=1)
                agree, pixels = agree + int((mask == reference).sum()), pixels + mask.size
        assert agree / pixels >= 0.99, (name, precision, agree / pixels)


def test_tensorrt11_fp16_copy_of_a_mask_export_keeps_the_uint8_mask(tmp_path: Path) -> None:
    """build-engine converts the ONNX to mixed fp16 for TensorRT 11: the argmax must stay on fp32 logits."""
    model = tiny_model("segformer")
    path = export_report(model, tmp_path / "m.onnx", size=(64, 64), output="mask", log=lambda _: None).path
    half = onnx.load(str(_fp16_copy(path, tmp_path / "m.fp16.onnx")))  # what build-engine parses on TensorRT 11
    assert {p.key: p.value for p in half.metadata_props}["cfnet.outputs"] == '["mask"]'
    onnx.checker.check_model(half, full_check=True)
    graph = onnx.shape_inference.infer_shapes(half).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}
    argmax = next(n for n in half.graph.node if n.op_type == "ArgMax")
    assert types[argmax.input[0]] == TensorProto.FLOAT and types["mask"] == TensorProto.UINT8
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    (mask,) = session.run(None, {"images": x})
    assert (mask == reference.argmax(axis=1)).mean() >= 0.99


def test_bad_outputs_are_refused(tmp_path: Path) -> None:
    from cfnet.errors import UserError

    with pytest.raises(UserError, match="unknown output 'probs'"):
        export_report(tiny_model("unet"), tmp_path / "x.onnx", size=(64, 64), output="probs")
    from cfnet.models import build_model

    many = build_model("unet", num_classes=300, preset="tiny")
    with pytest.raises(UserError, match="300 classes do not fit a uint8 mask"):
        export_report(many, tmp_path / "x.onnx", size=(64, 64), output="mask")
    assert not (tmp_path / "x.onnx").exists()
