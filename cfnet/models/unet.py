"""U-Net (Ronneberger et al., 2015): a contracting path of double 3x3 convolutions and 2x2 max pooling, an
expanding path of 2x2 transposed convolutions concatenated with the skip connection at the same resolution.

Presets: `paper` is the classic layout, widths 64/128/256/512/1024 (four poolings), with BatchNorm after
every convolution and 'same' padding so the output has the input's size (about 31.0 M parameters);
`tiny` has widths 8/16/32/64/128. Four poolings: sides must be multiples of 16 (`size_divisor`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from cfnet.errors import UserError
from cfnet.models.base import SegmentationModel

WIDTHS = {"tiny": (8, 16, 32, 64, 128), "paper": (64, 128, 256, 512, 1024)}


def presets(name: str) -> tuple[str, ...]:
    """The presets of `unet`."""
    return tuple(WIDTHS)


def build(name: str, preset: str, num_classes: int, backbone_weights: str | Path | None) -> SegmentationModel:
    """Build U-Net with `preset` (trained from scratch: no backbone weights)."""
    if backbone_weights is not None:
        raise UserError("U-Net takes no backbone weights", str(backbone_weights))
    return UNet(WIDTHS[preset], num_classes)


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """(3x3 conv, BatchNorm, ReLU) twice."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(SegmentationModel):
    """Encoder of double convs and max pooling, decoder of transposed convs, skip concatenation, 1x1 classifier."""

    size_divisor = 16

    def __init__(self, widths: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.down = nn.ModuleList(double_conv(cin, cout) for cin, cout in zip((3, *widths[:-1]), widths, strict=True))
        self.pool = nn.MaxPool2d(2)
        deep_to_shallow = widths[::-1]
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in deep_to_shallow[:-1])
        self.up = nn.ModuleList(double_conv(c, c // 2) for c in deep_to_shallow[:-1])
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_tracing() and (x.shape[-2] % self.size_divisor or x.shape[-1] % self.size_divisor):
            raise ValueError(f"U-Net needs sides that are multiples of {self.size_divisor}, got {tuple(x.shape)}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for upsample, block in zip(self.upsample, self.up, strict=True):
            x = block(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.classifier(x)
