"""PSPNet: exact, exportable adaptive pooling; encoder interface; ResNet-50 weight loading."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18, resnet50

from cfnet.errors import UserError
from cfnet.models import build_model
from cfnet.models.base import SegmentationModel
from cfnet.models.deeplabv3 import DeepLabv3
from cfnet.models.pooling import AdaptiveAvgPool2d, adaptive_avg_pool2d
from cfnet.models.pspnet import PSPEncoder, PSPNet, PyramidPooling


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (65, 97), (1, 1), (2, 7), (5, 3), (13, 6), (90, 121)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6, 7])
def test_pooling_equals_adaptive_avg_pool(size: tuple[int, int], bins: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    # bin boundaries: in float64 both are exact up to rounding
    assert torch.allclose(
        adaptive_avg_pool2d(x.double(), bins), F.adaptive_avg_pool2d(x.double(), bins), rtol=0, atol=1e-12
    )
    # float32, as used: within float32 rounding of torch's module and of the exact (float64) average. Each output is
    # a mean (weights summing to 1) taken by two float32 matrix products, so its error is a few units of
    # eps * max|x|, whatever order the kernels sum in: measured <= 0.38 with AVX-512 kernels, 0.50 with AVX2's
    # (an absolute 1e-6 failed there, for means of values up to 17); bound: 4.
    eps = torch.finfo(torch.float32).eps
    ours = AdaptiveAvgPool2d(bins)(x)
    assert torch.allclose(ours, torch.nn.AdaptiveAvgPool2d(bins)(x), rtol=0, atol=4 * eps * x.abs().max().item())
    shifted = x * 4 + 1  # a mean far from 0: float32 sums lose more precision
    exact = F.adaptive_avg_pool2d(shifted.double(), bins)
    bound = 4 * eps * shifted.abs().max().item()
    assert torch.allclose(adaptive_avg_pool2d(shifted, bins).double(), exact, rtol=0, atol=bound)


class _LoudPyramid(SegmentationModel):
    """Stride-8 conv with large weights (activations in the hundreds) -> PSPNet's pyramid pooling -> classifier.

    The pooling branches' reductions have positive weights, so an overflowed (inf) pooled sum reaches the
    logits instead of vanishing in a ReLU. Three classes keep the full-size parity checks cheap."""

    size_divisor = 8

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 8, stride=8)
        self.ppm = PyramidPooling(8)
        self.classifier = torch.nn.Conv2d(self.ppm.out_channels, 3, 1)
        with torch.no_grad():
            self.stem.weight.mul_(300.0)
            self.stem.bias.fill_(500.0)
            for stage in self.ppm.stages:
                stage[1].weight.abs_()
        self.config = {"model": "loud-pyramid", "preset": "test", "num_classes": 3}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.ppm(F.relu(self.stem(x))))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _run_observing_fp16_tensors(path: Path, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run an fp16 ONNX on the CPU with every fp16 tensor as an extra output: the logits and those tensors.

    ONNX Runtime's CPU provider has few fp16 kernels; it runs the others in fp32 and drops the casts between
    them, so a plain CPU run never rounds to fp16 where a GPU does. An observed tensor must be materialised
    in fp16."""
    proto = onnx.load(str(path))
    inferred = onnx.shape_inference.infer_shapes(proto).graph.value_info
    half = [v.name for v in inferred if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16]
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT16, None) for n in half)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, *tensors = session.run(None, {"images": x})
    return logits, dict(zip(half, tensors, strict=True))


def test_mixed_fp16_export_pools_a_full_cityscapes_frame_without_overflow(tmp_path: Path) -> None:
    """At 1024x2048 the 1x1 bin covers 128 x 256 stride-8 positions; their sum (~1.6e7 here) is inf in fp16,
    where the mixed-fp16 ONNX runs the pooling's MatMuls."""
    from export.onnx import export_onnx

    torch.manual_seed(0)
    model = _LoudPyramid().eval()
    x = torch.randn(1, 3, 1024, 2048)
    with torch.no_grad():
        features = F.relu(model.stem(x))
        expected = model(x).numpy()
    assert features.mean() > 300 and features.sum((2, 3)).min() > 100 * float(np.finfo(np.float16).max)
    path = export_onnx(model, tmp_path / "loud.onnx", size=(1024, 2048), dynamic=False, precision="fp16")
    logits, half = _run_observing_fp16_tensors(path, x.numpy())
    assert any("MatMul" in name for name in half)  # the pooling runs in fp16
    assert [name for name, t in half.items() if not np.isfinite(t).all()] == []
    assert np.isfinite(logits).all()
    assert (logits.argmax(1) == expected.argmax(1)).mean() >= 0.995


def test_pspnet_exports_with_dynamic_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("pspnet", preset="tiny").eval()
    out = tmp_path / "pspnet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 64, 64),),
            str(out),
            input_names=["images"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"images": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
        )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    # 72x100: stride-8 features of 9x13, which bins 2 and 6 do not divide; 2x96x160: another batch and size
    for shape in [(1, 3, 72, 100), (2, 3, 96, 160)]:
        x = torch.randn(*shape)
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == expected.shape == (shape[0], 19, *shape[2:])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_encoder_gives_four_maps_at_output_stride_8(preset: str) -> None:
    encoder = PSPEncoder(preset).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 64, 96))
    assert len(encoder.out_channels) == len(features) == 4
    assert [f.shape[1] for f in features] == list(encoder.out_channels)
    assert [tuple(f.shape[-2:]) for f in features] == [(16, 24), (8, 12), (8, 12), (8, 12)]


def test_backbone_weights_load_from_torchvision_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50.pt"
    torch.save(reference, path)
    pspnet = build_model("pspnet", preset="paper", backbone_weights=path)
    deeplab = build_model("deeplabv3", preset="paper", backbone_weights=path)  # the same ResNet-50 loader
    assert isinstance(pspnet, PSPNet) and isinstance(deeplab, DeepLabv3)
    for backbone in (pspnet.encoder.backbone, deeplab.net.backbone):
        loaded = backbone.state_dict()
        assert set(loaded) == {k for k in reference if not k.startswith("fc.")}
        for key, value in loaded.items():
            assert torch.equal(value, reference[key]), key


def test_bad_backbone_weights_are_user_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as text:
        build_model("pspnet", preset="paper", backbone_weights=garbage)
    assert text.value.what == "not a torchvision ResNet-50 state dict" and text.value.where == str(garbage)
    with pytest.raises(UserError, match="not a torchvision ResNet-50 state dict: a folder"):  # the CLI takes folders
        build_model("pspnet", preset="paper", backbone_weights=tmp_path)
    whole = tmp_path / "resnet18-model.pt"
    torch.save(resnet18(weights=None), whole)  # the model object, not its state dict
    with pytest.raises(UserError) as info:
        build_model("deeplabv3", preset="paper", backbone_weights=whole)
    message = str(info.value)
    assert message == (f"not a torchvision ResNet-50 state dict: it holds a pickled torchvision.models.resnet.ResNet, "
                       f"and only tensors and numbers are loaded ({whole})")
    assert len(message.splitlines()) == 1 and "\x1b" not in message and "weights_only" not in message
    wrong = tmp_path / "resnet18.pt"
    torch.save(resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(UserError, match="not a torchvision ResNet-50"):
        build_model("pspnet", preset="paper", backbone_weights=wrong)
    with pytest.raises(UserError, match="only the paper preset"):
        build_model("pspnet", preset="tiny", backbone_weights=wrong)
