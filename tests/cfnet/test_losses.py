"""The losses: InfoNCE against a loop-by-loop reference and its bounds, Dice and CE with ignored pixels,
gradients into both encoders of a fused model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from cfnet.losses import SegmentationLoss, cross_entropy, dice_loss, pixel_info_nce
from cfnet.models import build_model


def _reference_info_nce(a: Tensor, b: Tensor, temperature: float) -> float:
    """Bidirectional InfoNCE over every pixel of the batch, written out pair by pair."""
    va = [F.normalize(v, dim=0) for v in a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])]
    vb = [F.normalize(v, dim=0) for v in b.permute(0, 2, 3, 1).reshape(-1, b.shape[1])]
    k = len(va)
    total = 0.0
    for i in range(k):
        a_to_b = [float(va[i] @ vb[j]) / temperature for j in range(k)]
        b_to_a = [float(vb[i] @ va[j]) / temperature for j in range(k)]
        total += -a_to_b[i] + math.log(sum(math.exp(s) for s in a_to_b))
        total += -b_to_a[i] + math.log(sum(math.exp(s) for s in b_to_a))
    return total / (2 * k)


def test_info_nce_equals_the_pairwise_reference_when_every_pixel_is_drawn() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(2, 16, 3, 4), torch.randn(2, 16, 3, 4)
    b = a + 0.5 * b  # related but not identical
    got = pixel_info_nce(a, b, temperature=0.07, samples=1000)  # 24 positions < 1000: all of them
    assert got.item() == pytest.approx(_reference_info_nce(a, b, 0.07), rel=1e-4)


def test_info_nce_is_near_zero_for_identical_and_near_log_k_for_unrelated_embeddings() -> None:
    torch.manual_seed(0)
    k = 64
    a = torch.randn(2, 128, 8, 8)  # 128 positions, K of them drawn
    identical = pixel_info_nce(a, a.clone(), samples=k).item()
    assert 0.0 <= identical < 1e-2
    # unrelated: cosine similarities ~ N(0, 1/D), so with D large every logit is ~0 and the loss ~log K
    u, v = torch.randn(1, 4096, 8, 16), torch.randn(1, 4096, 8, 16)
    unrelated = pixel_info_nce(u, v, samples=k).item()
    assert unrelated == pytest.approx(math.log(k), abs=0.3)


def test_info_nce_is_not_constant_at_batch_size_one() -> None:
    torch.manual_seed(0)
    a = torch.randn(1, 128, 4, 8)
    values = {round(pixel_info_nce(a, a + torch.randn_like(a) * s).item(), 5) for s in (0.1, 0.5, 1.0, 3.0)}
    assert len(values) == 4
    assert min(values) > 0.0


def test_info_nce_rejects_embeddings_of_different_grids() -> None:
    with pytest.raises(ValueError, match="differ"):
        pixel_info_nce(torch.randn(1, 8, 2, 2), torch.randn(1, 8, 2, 3))


def test_dice_and_ce_are_near_zero_for_a_perfect_prediction() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 16, 16))
    logits = F.one_hot(target, 4).permute(0, 3, 1, 2).float() * 50.0
    assert dice_loss(logits, target).item() < 1e-5
    assert cross_entropy(logits, target).item() < 1e-5
    assert dice_loss(torch.zeros_like(logits), target).item() > 0.5


def test_ignored_pixels_change_neither_loss() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 5, (2, 12, 12))
    target[:, :4] = 255
    logits = torch.randn(2, 5, 12, 12)
    other = logits.clone()
    other[:, :, :4] = torch.randn(2, 5, 4, 12) * 10.0  # only under ignored pixels
    assert dice_loss(other, target).item() == pytest.approx(dice_loss(logits, target).item(), abs=1e-6)
    assert cross_entropy(other, target).item() == pytest.approx(cross_entropy(logits, target).item(), abs=1e-6)
    # and ignoring them equals computing on the labelled pixels alone
    assert cross_entropy(logits, target).item() == pytest.approx(
        F.cross_entropy(logits[:, :, 4:], target[:, 4:]).item(), abs=1e-6
    )
    labelled = dice_loss(logits[:, :, 4:], target[:, 4:]).item()
    assert dice_loss(logits, target).item() == pytest.approx(labelled, abs=1e-6)


def test_a_fully_ignored_target_gives_a_zero_finite_loss() -> None:
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    total, parts = SegmentationLoss()({"logits": logits}, torch.full((1, 4, 4), 255))
    total.backward()
    assert total.item() == 0.0 and parts == {"ce": 0.0, "dice": 0.0, "total": 0.0}


def test_segmentation_loss_weighs_its_parts_and_adds_contrastive_only_with_embeddings() -> None:
    torch.manual_seed(0)
    outputs = {"logits": torch.randn(1, 4, 8, 8), "embed_transformer": torch.randn(1, 16, 2, 2)}
    outputs["embed_cnn"] = outputs["embed_transformer"] + torch.randn(1, 16, 2, 2)
    target = torch.randint(0, 4, (1, 8, 8))
    total, parts = SegmentationLoss(ce=0.5, dice=2.0, contrastive=0.3)(outputs, target)
    assert set(parts) == {"ce", "dice", "contrastive", "total"}
    assert total.item() == pytest.approx(0.5 * parts["ce"] + 2.0 * parts["dice"] + 0.3 * parts["contrastive"], rel=1e-6)
    _, plain = SegmentationLoss()({"logits": outputs["logits"]}, target)
    assert set(plain) == {"ce", "dice", "total"}


@pytest.mark.parametrize("name", ["cfnet-pspnet", "cfnet-hrnet"])
def test_contrastive_gradients_reach_both_encoders(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, preset="tiny").train()
    loss, _ = SegmentationLoss(ce=0.0, dice=0.0, contrastive=1.0)(
        model.forward_train(torch.randn(1, 3, 64, 128)), torch.zeros(1, 64, 128, dtype=torch.long)
    )
    loss.backward()
    for branch in ("transformer", "cnn"):
        grads = [p.grad for k, p in model.named_parameters() if k.startswith(branch + ".")]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), branch
    assert all(p.grad is None for k, p in model.named_parameters() if k.startswith("decoder."))
