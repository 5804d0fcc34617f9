"""ContraFusionNet's training loss: cross-entropy + Dice + bidirectional pixel InfoNCE, all ignoring label 255."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cfnet.data.labels import IGNORE_INDEX


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean pixel cross-entropy over the labelled pixels (0, still differentiable, when there are none)."""
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def dice_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX, smooth: float = 1.0) -> Tensor:
    """Soft Dice on softmax probabilities, pooled over the batch, averaged over the classes present in `target`.

    Ignored pixels count neither in the prediction nor in the ground truth. 0 for a perfect prediction.
    """
    valid = (target != ignore_index).unsqueeze(1).to(logits.dtype)
    probs = torch.softmax(logits, dim=1) * valid
    safe = torch.where(target == ignore_index, 0, target).unsqueeze(1)
    truth = torch.zeros_like(probs).scatter_(1, safe, 1.0) * valid
    dims = (0, 2, 3)
    intersection = (probs * truth).sum(dims)
    truth_sum = truth.sum(dims)
    dice = 1.0 - (2.0 * intersection + smooth) / (probs.sum(dims) + truth_sum + smooth)
    present = truth_sum > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    return dice[present].mean()


def pixel_info_nce(
    embed_a: Tensor,
    embed_b: Tensor,
    temperature: float = 0.07,
    samples: int = 256,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Bidirectional InfoNCE between two `N x D x h x w` embeddings of the same grid.

    Up to `samples` pixel positions are drawn across the whole batch; position i of `a` has position i of `b`
    as its positive and every other drawn position (any image of the batch) as negatives, and vice versa;
    the two directions are averaged. With K drawn positions, identical embeddings give ~0, unrelated ~log K.
    """
    if embed_a.shape != embed_b.shape:
        raise ValueError(f"embeddings differ in shape: {tuple(embed_a.shape)} vs {tuple(embed_b.shape)}")
    dim = embed_a.shape[1]
    flat_a = embed_a.permute(0, 2, 3, 1).reshape(-1, dim)
    flat_b = embed_b.permute(0, 2, 3, 1).reshape(-1, dim)
    index = torch.randperm(flat_a.shape[0], device=flat_a.device, generator=generator)[:samples]
    a = F.normalize(flat_a[index], dim=1)
    b = F.normalize(flat_b[index], dim=1)
    similarity = a @ b.t() / temperature
    labels = torch.arange(similarity.shape[0], device=similarity.device)
    return 0.5 * (F.cross_entropy(similarity, labels) + F.cross_entropy(similarity.t(), labels))


class SegmentationLoss(nn.Module):
    """`ce * CE + dice * Dice + contrastive * InfoNCE + aux * (ce * CE + dice * Dice of the auxiliary logits)`.

    The InfoNCE term (at `temperature`) only when the model's outputs carry `embed_transformer` and
    `embed_cnn`, the auxiliary term only when they carry `aux_logits` (the fused models' transformer branch).
    Returns the total and the parts (floats) for logging.
    """

    def __init__(
        self,
        ce: float = 1.0,
        dice: float = 1.0,
        contrastive: float = 0.1,
        temperature: float = 0.07,
        samples: int = 256,
        ignore_index: int = IGNORE_INDEX,
        aux: float = 0.0,
    ) -> None:
        super().__init__()
        self.weights = {"ce": ce, "dice": dice, "contrastive": contrastive, "aux": aux}
        self.temperature = temperature
        self.samples = samples
        self.ignore_index = ignore_index

    def parts(self) -> set[str]:
        """The models' training-only parts this loss uses (`SegmentationModel.TRAINING_MODULES`)."""
        return {part for part, key in (("embeddings", "contrastive"), ("aux", "aux")) if self.weights[key]}

    def _segmentation(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if self.weights["ce"]:
            terms["ce"] = cross_entropy(logits, target, self.ignore_index)
        if self.weights["dice"]:
            terms["dice"] = dice_loss(logits, target, self.ignore_index)
        return terms

    def forward(self, outputs: dict[str, Tensor], target: Tensor) -> tuple[Tensor, dict[str, float]]:
        logits = outputs["logits"]
        terms = self._segmentation(logits, target)
        if self.weights["contrastive"] and "embed_transformer" in outputs and "embed_cnn" in outputs:
            terms["contrastive"] = pixel_info_nce(
                outputs["embed_transformer"], outputs["embed_cnn"], self.temperature, self.samples
            )
        if self.weights["aux"] and "aux_logits" in outputs:
            aux = self._segmentation(outputs["aux_logits"], target)
            terms["aux"] = sum((self.weights[k] * v for k, v in aux.items()), logits.new_zeros(()))
        total = sum((self.weights[k] * v for k, v in terms.items()), logits.new_zeros(()))
        parts = {k: float(v.detach()) for k, v in terms.items()}
        parts["total"] = float(total.detach())
        return total, parts
