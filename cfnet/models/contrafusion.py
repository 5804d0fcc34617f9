"""ContraFusionNet: a Mix Transformer and a CNN encoder side by side, fused scale by scale, all-MLP decoder.

At each of the four transformer scales (1/4 .. 1/32) the CNN feature is bilinearly resampled to the
transformer feature's exact size, concatenated to it and fused back to the transformer width (1x1 conv, BN,
ReLU). Training adds projection heads on the deepest features of both encoders, whose embeddings feed the
pixel InfoNCE loss (`cfnet.losses`), and an auxiliary all-MLP decoder on the transformer features alone, trained
jointly, so that the transformer branch is a segmenter of its own (`TransformerBranch`, SegFormer's size).
`forward` (the inference and export graph) runs none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cfnet.models.base import SegmentationModel, resize_to
from cfnet.models.segformer import PRESETS as MIT_PRESETS
from cfnet.models.segformer import AllMLPDecoder, MiTConfig, MixTransformer, load_hf_weights

EMBED_DIM = 128
HEAD_HIDDEN = 256
CNN_ENCODERS = {"cfnet-pspnet": "pspnet", "cfnet-hrnet": "hrnet"}


class ProjectionHead(nn.Module):
    """1x1 conv, ReLU, 1x1 conv to `dim`; the output is L2-normalised over channels."""

    def __init__(self, in_channels: int, dim: int = EMBED_DIM, hidden: int = HEAD_HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=1)


def fusion(transformer_channels: int, cnn_channels: int) -> nn.Sequential:
    """Concatenated transformer + CNN features -> transformer width: 1x1 conv, BN, ReLU."""
    return nn.Sequential(
        nn.Conv2d(transformer_channels + cnn_channels, transformer_channels, 1, bias=False),
        nn.BatchNorm2d(transformer_channels),
        nn.ReLU(inplace=True),
    )


class ContraFusionNet(SegmentationModel):
    """MiT + CNN encoder with per-scale fusion and an all-MLP decoder; logits at the input size."""

    def __init__(self, config: MiTConfig, cnn: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.transformer = MixTransformer(config)
        self.cnn = cnn
        cnn_channels: tuple[int, int, int, int] = cnn.out_channels  # type: ignore[assignment]
        self.fusions = nn.ModuleList(fusion(t, c) for t, c in zip(config.widths, cnn_channels, strict=True))
        self.decoder = AllMLPDecoder(config.widths, config.decoder_dim, num_classes)
        self.head_transformer: ProjectionHead | None = ProjectionHead(config.widths[-1])
        self.head_cnn: ProjectionHead | None = ProjectionHead(cnn_channels[-1])
        self.aux_decoder: AllMLPDecoder | None = AllMLPDecoder(config.widths, config.decoder_dim, num_classes)


    TRAINING_MODULES: ClassVar[dict[str, tuple[str, ...]]] = {
        "embeddings": ("head_transformer", "head_cnn"),
        "aux": ("aux_decoder",),
    }

    def _encode(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return self.transformer(x), self.cnn(x)

    def _decode(self, x: Tensor, transformer: list[Tensor], cnn: list[Tensor]) -> Tensor:
        fused = [
            fuse(torch.cat([t, resize_to(c, t)], dim=1))
            for fuse, t, c in zip(self.fusions, transformer, cnn, strict=True)
        ]
        return resize_to(self.decoder(fused), x)

    def forward(self, x: Tensor) -> Tensor:
        transformer, cnn = self._encode(x)
        return self._decode(x, transformer, cnn)

    def forward_train(self, x: Tensor) -> dict[str, Tensor]:
        """Logits plus `embed_transformer` and `embed_cnn` (`N x 128 x h x w` on the transformer's deepest grid)
        and `aux_logits` (the transformer branch's, at the input size), those whose modules are kept."""
        transformer, cnn = self._encode(x)
        deepest = transformer[-1]
        out = {"logits": self._decode(x, transformer, cnn)}
        if self.head_transformer is not None and self.head_cnn is not None:
            out["embed_transformer"] = self.head_transformer(deepest)
            out["embed_cnn"] = self.head_cnn(resize_to(cnn[-1], deepest))
        if self.aux_decoder is not None:
            out["aux_logits"] = resize_to(self.aux_decoder(transformer), x)
        return out


class TransformerBranch(SegmentationModel):
    """The fused model's MiT encoder and auxiliary all-MLP decoder alone: SegFormer's graph, the fused
    model's weights (shared, not copied). `config` is the fused model's plus `branch: transformer`."""

    def __init__(self, fused: ContraFusionNet) -> None:
        super().__init__()
        if fused.aux_decoder is None:
            raise ValueError("the fused model has no auxiliary decoder")
        self.transformer = fused.transformer
        self.aux_decoder = fused.aux_decoder
        self.config = {**getattr(fused, "config", {}), "branch": "transformer"}

    def forward(self, x: Tensor) -> Tensor:
        return resize_to(self.aux_decoder(self.transformer(x)), x)


def _cnn_encoder(name: str, preset: str) -> nn.Module:
    cnn_preset = "tiny" if preset == "tiny" else "paper"  # the MiT presets b0, b1, b2 pair with the paper's CNN
    if CNN_ENCODERS[name] == "pspnet":
        from cfnet.models.pspnet import PSPEncoder

        return PSPEncoder(cnn_preset)
    from cfnet.models.hrnet import HRNetEncoder

    return HRNetEncoder(cnn_preset)


def presets(name: str) -> tuple[str, ...]:
    """The fused models' presets: `tiny` (tiny MiT + tiny CNN), `paper` (paper MiT + the paper's CNN) and `b0`,
    `b1`, `b2` (the official MiT shapes, so published MiT weights load, + the paper's CNN)."""
    return ("tiny", "b0", "b1", "b2", "paper")


def build(name: str, preset: str, num_classes: int, backbone_weights: str | Path | None) -> ContraFusionNet:
    """Build `cfnet-pspnet` or `cfnet-hrnet`; `backbone_weights` is a transformers MiT save for the transformer
    branch (the CNN branch starts from scratch)."""
    model = ContraFusionNet(MIT_PRESETS[preset], _cnn_encoder(name, preset), num_classes)
    if backbone_weights is not None:
        load_hf_weights(model.transformer, backbone_weights)
    return model
