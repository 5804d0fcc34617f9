"""Every model of the zoo: logits at the input size, any input size (padded per `size_divisor`), one
training step, and the paper preset builds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cfnet.models import MODEL_NAMES, build_model, presets
from cfnet.models.profile import count_parameters

# published parameter counts (millions) that a paper preset is built to match
PUBLISHED_TARGETS = {"hrnet": 1.5}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tiny_gives_logits_at_the_input_size(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, preset="tiny").eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 128))
    assert logits.shape == (1, 19, 64, 128)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_any_input_size_works_once_padded_to_the_size_divisor(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, preset="tiny", num_classes=7).eval()
    divisor = model.size_divisor
    assert divisor >= 1
    height, width = 50, 70  # multiple of neither 32 nor 16
    pad_h, pad_w = -height % divisor, -width % divisor
    x = F.pad(torch.randn(2, 3, height, width), (0, pad_w, 0, pad_h))
    assert x.shape[-2] % divisor == 0 and x.shape[-1] % divisor == 0
    with torch.no_grad():
        logits = model(x)[..., :height, :width]
    assert logits.shape == (2, 7, height, width)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_training_step_updates_the_weights(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, preset="tiny").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    images = torch.randn(1, 3, 64, 128)  # batch size 1, as the paper trains
    target = torch.randint(0, 19, (1, 64, 128))
    target[:, :8] = 255  # ignored pixels
    outputs = model.forward_train(images)
    assert outputs["logits"].shape == (1, 19, 64, 128)
    if name.startswith("cfnet-"):
        for key in ("embed_transformer", "embed_cnn"):
            embedding = outputs[key]
            assert embedding.shape[:2] == (1, 128)
            assert torch.allclose(embedding.norm(dim=1), torch.ones(()), atol=1e-4)
    loss = F.cross_entropy(outputs["logits"], target, ignore_index=255)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with_gradient = {k for k, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert len(with_gradient) >= len(before) // 2
    changed = {k for k, p in model.named_parameters() if not torch.equal(p.detach(), before[k])}
    assert with_gradient <= changed


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_paper_preset_builds_and_is_larger_than_tiny(name: str) -> None:
    assert {"tiny", "paper"} <= set(presets(name))
    with torch.device("meta"):  # construction without filling tens of millions of weights
        paper = count_parameters(build_model(name, preset="paper"))
    tiny = count_parameters(build_model(name, preset="tiny"))
    assert paper > tiny > 0
    if name in PUBLISHED_TARGETS:
        target = PUBLISHED_TARGETS[name] * 1e6
        assert abs(paper - target) / target < 0.15
