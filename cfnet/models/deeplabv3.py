"""DeepLabv3 (Chen et al., 2017): dilated ResNet (output stride 8) + atrous spatial pyramid pooling.

`paper` is torchvision's `deeplabv3_resnet50` built with `weights=None, weights_backbone=None` (nothing is
downloaded) and no auxiliary head; `backbone_weights=PATH` loads a torchvision ResNet-50 state dict.
`tiny` is torchvision's `DeepLabV3` with its `DeepLabHead` (ASPP rates 12/24/36, 256 channels) on PSPNet's
tiny dilated ResNet (widths 16/32/64/128). Both return the logits tensor, not torchvision's dict. The
image-pooling branch of ASPP has a biased 1x1 conv instead of conv + BatchNorm, so training works at batch
size 1 (the paper's).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import deeplabv3_resnet50
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

from cfnet.errors import UserError
from cfnet.models.base import SegmentationModel
from cfnet.models.pspnet import TINY_WIDTHS, TinyDilatedResNet, load_resnet50_weights

PRESETS = ("tiny", "paper")


def presets(name: str) -> tuple[str, ...]:
    """The presets of `deeplabv3`."""
    return PRESETS


def build(name: str, preset: str, num_classes: int, backbone_weights: str | Path | None) -> SegmentationModel:
    """Build DeepLabv3 with `preset`; `backbone_weights` is a torchvision ResNet-50 state dict (paper preset)."""
    if preset == "paper":
        net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    else:
        if backbone_weights is not None:
            raise UserError("backbone weights are a ResNet-50 state dict: only the paper preset takes them",
                            str(backbone_weights))
        backbone = IntermediateLayerGetter(TinyDilatedResNet(), return_layers={"layer4": "out"})
        net = DeepLabV3(backbone, DeepLabHead(TINY_WIDTHS[-1], num_classes))
    if backbone_weights is not None:
        load_resnet50_weights(net.backbone, backbone_weights)
    image_pooling = net.classifier[0].convs[-1]  # ASPPPooling: global pool, 1x1 conv, BatchNorm, ReLU
    image_pooling[1] = nn.Conv2d(image_pooling[1].in_channels, image_pooling[1].out_channels, 1)
    image_pooling[2] = nn.Identity()  # one value per channel at batch size 1: training-mode BatchNorm fails
    return DeepLabv3(net)


class DeepLabv3(SegmentationModel):
    """torchvision's DeepLabV3, returning the `out` logits (already at the input size)."""

    size_divisor = 1  # torchvision upsamples to the exact input size; global pooling works at any size

    def __init__(self, net: DeepLabV3) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)["out"]
