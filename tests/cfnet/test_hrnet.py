"""HRNet: preset sizes against the published ones, multi-resolution branches, fusion, odd input sizes."""

from __future__ import annotations

import pytest
import torch

from cfnet.models import build_model
from cfnet.models.hrnet import HRModule, HRNetEncoder
from cfnet.models.profile import count_parameters


@pytest.mark.parametrize(("preset", "published_m"), [("small", 1.5), ("paper", 1.5), ("w18", 9.6)])
def test_parameter_counts_match_published_hrnetv2(preset: str, published_m: float) -> None:
    # HRNetV2-W18-Small-v1: 1.5 M, HRNetV2-W18: 9.6 M (Cityscapes table of the HRNet paper)
    with torch.device("meta"):
        count = count_parameters(build_model("hrnet", preset=preset)) / 1e6
    assert abs(count - published_m) / published_m < 0.15


@pytest.mark.parametrize(("preset", "widths"), [("tiny", (8, 16, 32, 64)), ("w18", (18, 36, 72, 144))])
def test_encoder_branches_halve_resolution_at_odd_sizes(preset: str, widths: tuple[int, ...]) -> None:
    encoder = HRNetEncoder(preset).eval()
    assert encoder.out_channels == widths
    height, width = 67, 131
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, height, width))
    expected = []
    for halvings in range(2, 6):  # strides 4, 8, 16, 32 by stride-2 convolutions with padding 1
        h, w = height, width
        for _ in range(halvings):
            h, w = (h + 1) // 2, (w + 1) // 2
        expected.append((h, w))
    assert [tuple(f.shape[-2:]) for f in features] == expected
    assert [f.shape[1] for f in features] == list(widths)


def test_fusion_exchanges_information_between_all_branches() -> None:
    torch.manual_seed(0)
    module = HRModule((4, 8, 16), blocks=1).eval()
    inputs = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    with torch.no_grad():
        base = module(inputs)
        for j in range(3):
            changed = [x.clone() for x in inputs]
            changed[j] += 1.0
            outputs = module(changed)
            assert all(not torch.allclose(o, b) for o, b in zip(outputs, base, strict=True))


def test_odd_input_size_gives_logits_at_input_size() -> None:
    model = build_model("hrnet", preset="tiny", num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 45, 77)).shape == (2, 5, 45, 77)
