"""What every model of the zoo is: logits at the input size, a size divisor, a training forward."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


class SegmentationModel(nn.Module):
    """Base of the zoo. `forward(x)` returns `N x C x H x W` logits at the input size.

    `size_divisor`: inputs are padded to a multiple of it by export and runtime (1 = any size is exact).
    `config`: name, preset and class count, set by `build_model`, saved in checkpoints and ONNX metadata.
    """

    size_divisor: int = 32
    config: dict[str, Any]

    def forward_train(self, x: Tensor) -> dict[str, Tensor]:
        """Training forward: `logits`, plus `embed_transformer` and `embed_cnn` for the fused models."""
        return {"logits": self(x)}


def resize_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinearly resample `x` to the exact spatial size of `like` (so uneven strides and odd sizes line up)."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
