"""PSPNet (Zhao et al., 2017): dilated ResNet (output stride 8) + pyramid pooling module (bins 1, 2, 3, 6).

Presets: `paper` is torchvision's ResNet-50 with the strides of layer3 and layer4 replaced by dilation 2
and 4, a pyramid pooling module reducing 2048 channels to 512 per bin and a 3x3 head of 512 channels;
`tiny` is a four-stage dilated ResNet of basic blocks (widths 16/32/64/128, one block per stage) for tests
and CPU demos. The pooling is `cfnet.models.pooling.AdaptiveAvgPool2d`: exact at any input size and
exportable with dynamic H and W. `PSPEncoder` (the backbone alone) is also the CNN branch of `cfnet-pspnet`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet50

from cfnet.errors import UserError
from cfnet.models.base import SegmentationModel
from cfnet.models.pooling import AdaptiveAvgPool2d
from cfnet.torchfile import load_torch_file

PRESETS = ("tiny", "paper")
BINS = (1, 2, 3, 6)
TINY_WIDTHS = (16, 32, 64, 128)
HEAD_CHANNELS = {"tiny": 64, "paper": 512}
RESNET50_WEIGHTS = "torchvision ResNet-50 state dict"


def presets(name: str) -> tuple[str, ...]:
    """The presets of `pspnet`."""
    return PRESETS


def build(name: str, preset: str, num_classes: int, backbone_weights: str | Path | None) -> SegmentationModel:
    """Build PSPNet with `preset`; `backbone_weights` is a torchvision ResNet-50 state dict (paper preset)."""
    return PSPNet(preset, num_classes, backbone_weights)


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Convolution (no bias, 'same' padding for odd kernels) + BatchNorm + ReLU."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DilatedBasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions and a shortcut) that accepts a dilation."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, 3, stride, dilation)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class TinyDilatedResNet(nn.Module):
    """Small ResNet laid out as torchvision's (conv1 .. layer4): strides 4, 8, 8, 8 (dilation 1, 1, 2, 4)."""

    def __init__(self, widths: tuple[int, int, int, int] = TINY_WIDTHS) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.conv1 = nn.Conv2d(3, w1, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = DilatedBasicBlock(w1, w1)
        self.layer2 = DilatedBasicBlock(w1, w2, stride=2)
        self.layer3 = DilatedBasicBlock(w2, w3, dilation=2)
        self.layer4 = DilatedBasicBlock(w3, w4, dilation=4)


def dilated_resnet(preset: str) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """The output-stride-8 backbone of `preset` and the channels of its layer1..layer4."""
    if preset == "tiny":
        return TinyDilatedResNet(), TINY_WIDTHS
    backbone = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    del backbone.fc, backbone.avgpool
    return backbone, (256, 512, 1024, 2048)


def load_resnet50_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a torchvision ResNet-50 state dict (the `fc.*` classifier is ignored) into `backbone`."""
    state = load_torch_file(path, RESNET50_WEIGHTS)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"not a {RESNET50_WEIGHTS}: it holds no mapping of names to tensors", str(path))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        backbone.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]  # the first missing, unexpected or misshapen keys
        raise UserError(f"not a {RESNET50_WEIGHTS}: {detail[:200]}", str(path)) from exc


class PSPEncoder(nn.Module):
    """The dilated ResNet of PSPNet; `forward(x)` returns layer1..layer4 (strides 4, 8, 8, 8)."""

    def __init__(self, preset: str, backbone_weights: str | Path | None = None) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise UserError(f"unknown PSPNet encoder preset '{preset}'", f"choose from {', '.join(PRESETS)}")
        self.backbone, self.out_channels = dilated_resnet(preset)
        if backbone_weights is not None:
            if preset != "paper":
                raise UserError("backbone weights are a ResNet-50 state dict: only the paper preset takes them",
                                str(backbone_weights))
            load_resnet50_weights(self.backbone, backbone_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        b: Any = self.backbone  # torchvision's ResNet or TinyDilatedResNet: the same attribute names
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        features = []
        for layer in (b.layer1, b.layer2, b.layer3, b.layer4):
            x = layer(x)
            features.append(x)
        return features


class PyramidPooling(nn.Module):
    """Pool to each bin size, reduce channels (1x1 conv-ReLU), upsample back, concatenate with the input.

    The reductions have a bias and no BatchNorm: a 1x1 bin holds one value per channel at batch size 1 (the
    paper trains at 1), where training-mode BatchNorm is undefined.
    """

    def __init__(self, channels: int, bins: tuple[int, ...] = BINS) -> None:
        super().__init__()
        reduced = channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool2d(b), nn.Conv2d(channels, reduced, 1), nn.ReLU(inplace=True)) for b in bins
        )
        self.out_channels = channels + reduced * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False) for stage in self.stages]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(SegmentationModel):
    """Dilated ResNet -> pyramid pooling -> 3x3 conv-BN-ReLU -> dropout -> 1x1 classifier -> upsample."""

    size_divisor = 1  # exact pooling and size-based upsampling: any input size works as is

    def __init__(self, preset: str, num_classes: int, backbone_weights: str | Path | None = None) -> None:
        super().__init__()
        self.encoder = PSPEncoder(preset, backbone_weights)
        self.ppm = PyramidPooling(self.encoder.out_channels[-1])
        self.head = conv_bn_relu(self.ppm.out_channels, HEAD_CHANNELS[preset], kernel=3)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(HEAD_CHANNELS[preset], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        features = self.encoder(x)[-1]
        logits = self.classifier(self.dropout(self.head(self.ppm(features))))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
