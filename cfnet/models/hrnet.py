"""HRNet (Wang et al., 2019), HRNetV2 segmentation form: parallel multi-resolution branches, repeated fusion.

Stem (two 3x3 stride-2 convolutions) -> stage 1 (bottleneck blocks at 1/4) -> stages 2, 3, 4, each adding
a branch at half the resolution of the previous lowest one and made of modules: basic blocks on every
branch, then a fusion where each output branch sums all inputs resampled to its resolution (1x1 conv +
upsample from lower resolutions, strided 3x3 convs from higher ones). Segmentation head: all branches
upsampled to 1/4, concatenated, 1x1 conv-BN-ReLU, 1x1 classifier, upsampled to the input.

Presets: `small` is HRNetV2-W18-Small-v1 (the paper's 1.5 M parameter row), `w18` is HRNetV2-W18,
`tiny` halves `small`'s widths for tests, `paper` = `small`. All resampling targets the exact size of the
other tensor, so any input size works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cfnet.errors import UserError
from cfnet.models.base import SegmentationModel, resize_to


@dataclass(frozen=True)
class StageConfig:
    """One stage: `modules` repetitions of (basic blocks per branch, then fusion)."""

    modules: int
    blocks: int
    widths: tuple[int, ...]


@dataclass(frozen=True)
class HRNetConfig:
    """Widths and depths of an HRNet: stem channels, stage 1 bottlenecks, stages 2-4."""

    stem: int
    stage1_blocks: int
    stage1_planes: int
    stages: tuple[StageConfig, StageConfig, StageConfig]


def _config(stem: int, stage1: tuple[int, int], modules: tuple[int, int, int], blocks: int,
            widths: tuple[int, int, int, int]) -> HRNetConfig:
    stages = tuple(StageConfig(modules[i], blocks, widths[: i + 2]) for i in range(3))
    return HRNetConfig(stem, stage1[0], stage1[1], stages)  # type: ignore[arg-type]


CONFIGS: dict[str, HRNetConfig] = {
    "tiny": _config(32, (1, 16), (1, 1, 1), 1, (8, 16, 32, 64)),
    "small": _config(64, (1, 32), (1, 1, 1), 2, (16, 32, 64, 128)),
    "w18": _config(64, (4, 64), (1, 4, 3), 4, (18, 36, 72, 144)),
}
CONFIGS["paper"] = CONFIGS["small"]
PRESETS = ("tiny", "small", "w18", "paper")


def presets(name: str) -> tuple[str, ...]:
    """The presets of `hrnet`."""
    return PRESETS


def build(name: str, preset: str, num_classes: int, backbone_weights: str | Path | None) -> SegmentationModel:
    """Build HRNet with `preset` (no pretrained weights are supported)."""
    if backbone_weights is not None:
        raise UserError("HRNet takes no backbone weights", str(backbone_weights))
    return HRNet(preset, num_classes)


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Convolution (no bias, 'same' padding) + BatchNorm, then ReLU when `relu`."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with an identity shortcut (widths are kept inside a branch)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a projected shortcut when the width changes."""

    expansion = 4

    def __init__(self, cin: int, planes: int) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.body = nn.Sequential(
            conv_bn(cin, planes, 1), conv_bn(planes, planes), conv_bn(planes, cout, 1, relu=False)
        )
        self.shortcut = nn.Identity() if cin == cout else conv_bn(cin, cout, 1, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.shortcut(x) + self.body(x))


class FuseLayer(nn.Module):
    """Output branch i = ReLU(sum over inputs j of input j brought to branch i's width and resolution)."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.paths = nn.ModuleList()
        for i, wi in enumerate(widths):
            row = nn.ModuleList()
            for j, wj in enumerate(widths):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:  # lower resolution: 1x1 conv, upsampled in forward
                    row.append(conv_bn(wj, wi, 1, relu=False))
                else:  # higher resolution: i - j stride-2 3x3 convs, the last one changes the width
                    steps = [conv_bn(wj, wj, stride=2) for _ in range(i - j - 1)]
                    row.append(nn.Sequential(*steps, conv_bn(wj, wi, stride=2, relu=False)))
            self.paths.append(row)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        outs = []
        for i, row in enumerate(self.paths):
            total = xs[i]
            for j, path in enumerate(cast(nn.ModuleList, row)):
                if j != i:
                    y = path(xs[j])
                    total = total + (resize_to(y, xs[i]) if j > i else y)
            outs.append(F.relu(total))
        return outs


class HRModule(nn.Module):
    """Basic blocks on every branch, then a fusion across branches."""

    def __init__(self, widths: tuple[int, ...], blocks: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(w) for _ in range(blocks)]) for w in widths)
        self.fuse = FuseLayer(widths)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        return self.fuse([branch(x) for branch, x in zip(self.branches, xs, strict=True)])


class Transition(nn.Module):
    """From n branches to n + 1: 3x3 convs where a width changes; the new branch from the lowest one, stride 2."""

    def __init__(self, cins: tuple[int, ...], couts: tuple[int, ...]) -> None:
        super().__init__()
        kept = zip(cins, couts[: len(cins)], strict=True)
        self.layers = nn.ModuleList(nn.Identity() if ci == co else conv_bn(ci, co) for ci, co in kept)
        self.new_branch = conv_bn(cins[-1], couts[-1], stride=2)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        return [layer(x) for layer, x in zip(self.layers, xs, strict=True)] + [self.new_branch(xs[-1])]


class HRNetEncoder(nn.Module):
    """HRNet backbone; `forward(x)` returns the four branches (strides 4, 8, 16, 32), shallow to deep."""

    def __init__(self, preset: str) -> None:
        super().__init__()
        if preset not in CONFIGS:
            raise UserError(f"unknown HRNet preset '{preset}'", f"choose from {', '.join(PRESETS)}")
        cfg = CONFIGS[preset]
        self.stem = nn.Sequential(conv_bn(3, cfg.stem, stride=2), conv_bn(cfg.stem, cfg.stem, stride=2))
        stage1_out = cfg.stage1_planes * Bottleneck.expansion
        self.stage1 = nn.Sequential(
            *[Bottleneck(cfg.stem if b == 0 else stage1_out, cfg.stage1_planes) for b in range(cfg.stage1_blocks)]
        )
        previous: tuple[int, ...] = (stage1_out,)
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        for stage in cfg.stages:
            self.transitions.append(Transition(previous, stage.widths))
            self.stages.append(nn.Sequential(*[HRModule(stage.widths, stage.blocks) for _ in range(stage.modules)]))
            previous = stage.widths
        self.out_channels: tuple[int, int, int, int] = previous  # type: ignore[assignment]

    def forward(self, x: Tensor) -> list[Tensor]:
        xs = [self.stage1(self.stem(x))]
        for transition, stage in zip(self.transitions, self.stages, strict=True):
            xs = stage(transition(xs))
        return xs


class HRNet(SegmentationModel):
    """HRNetV2 segmentation: concatenate all branches at 1/4, 1x1 conv-BN-ReLU, classifier, upsample."""

    size_divisor = 1  # size-based resampling everywhere: any input size works as is

    def __init__(self, preset: str, num_classes: int) -> None:
        super().__init__()
        self.encoder = HRNetEncoder(preset)
        channels = sum(self.encoder.out_channels)
        self.head = conv_bn(channels, channels, 1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        xs = self.encoder(x)
        features = torch.cat([xs[0], *[resize_to(y, xs[0]) for y in xs[1:]]], dim=1)
        return F.interpolate(self.classifier(self.head(features)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)
