"""What every model of the zoo is: logits at the input size, a size divisor, a training forward."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn


class SegmentationModel(nn.Module):
    """Base of the zoo. `forward(x)` returns `N x C x H x W` logits at the input size.

    `size_divisor`: inputs are padded to a multiple of it by export and runtime (1 = any size is exact).
    `config`: name, preset and class count, set by `build_model`, saved in checkpoints and ONNX metadata.
    """

    size_divisor: int = 32
    config: dict[str, Any]
    TRAINING_MODULES: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Training-only parts (a `forward_train` output each, e.g. `aux`) -> the attributes holding their modules."""

    def drop_training_modules(self, keep: Collection[str]) -> None:
        """Remove the training-only parts not in `keep`: a part the loss does not use gets no gradient (which
        DDP refuses), and a checkpoint then holds only the parts that were trained."""
        for part, names in self.TRAINING_MODULES.items():
            if part not in keep:
                for name in names:
                    setattr(self, name, None)

    def parts_in(self, state_keys: Iterable[str]) -> set[str]:
        """The training-only parts whose weights a state dict with `state_keys` holds."""
        prefixes = {name + ".": part for part, names in self.TRAINING_MODULES.items() for name in names}
        return {part for key in state_keys for prefix, part in prefixes.items() if key.startswith(prefix)}

    def forward_train(self, x: Tensor) -> dict[str, Tensor]:
        """Training forward: `logits`, plus `embed_transformer` and `embed_cnn` for the fused models."""
        return {"logits": self(x)}


def resize_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinearly resample `x` to the exact spatial size of `like` (so uneven strides and odd sizes line up)."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
