"""PSPNet: exact, exportable adaptive pooling; encoder interface; ResNet-50 weight loading."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18, resnet50

from cfnet.errors import UserError
from cfnet.models import build_model
from cfnet.models.deeplabv3 import DeepLabv3
from cfnet.models.pooling import AdaptiveAvgPool2d, adaptive_avg_pool2d
from cfnet.models.pspnet import PSPEncoder, PSPNet


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (65, 97), (1, 1), (2, 7), (5, 3), (13, 6), (90, 121)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6, 7])
def test_pooling_equals_adaptive_avg_pool(size: tuple[int, int], bins: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    # bin boundaries: in float64 both are exact up to rounding
    assert torch.allclose(
        adaptive_avg_pool2d(x.double(), bins), F.adaptive_avg_pool2d(x.double(), bins), rtol=0, atol=1e-12
    )
    # float32, as used: within 1e-6 of torch's module and of the exact (float64) average
    ours = AdaptiveAvgPool2d(bins)(x)
    assert torch.allclose(ours, torch.nn.AdaptiveAvgPool2d(bins)(x), rtol=0, atol=1e-6)
    shifted = x * 4 + 1  # a mean far from 0: float32 sums lose more precision
    exact = F.adaptive_avg_pool2d(shifted.double(), bins)
    assert torch.allclose(adaptive_avg_pool2d(shifted, bins).double(), exact, rtol=0, atol=1e-6)


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
    with pytest.raises(UserError, match="cannot read backbone weights"):
        build_model("pspnet", preset="paper", backbone_weights=garbage)
    wrong = tmp_path / "resnet18.pt"
    torch.save(resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(UserError, match="not a torchvision ResNet-50"):
        build_model("pspnet", preset="paper", backbone_weights=wrong)
    with pytest.raises(UserError, match="only the paper preset"):
        build_model("pspnet", preset="tiny", backbone_weights=wrong)
