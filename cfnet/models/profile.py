"""Model size and cost: parameters and GFLOPs (counted by `torch.utils.flop_counter.FlopCounterMode`).

FlopCounterMode counts a multiply-add as 2 FLOPs and counts only the ops it has formulas for (convolutions,
matrix products, attention); elementwise ops, normalisation, pooling and resampling are not counted.
`profile` builds the model on the meta device: shapes are propagated without allocating or computing
anything, so even the paper presets at 512x1024 are profiled in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cfnet.models.registry import build_model
from cfnet.sizes import padded_size


@dataclass(frozen=True)
class ModelProfile:
    """Size and cost of one model preset; `gflops` is for one image of `size` (H, W), forward, eval mode, fed
    as export and the runtime feed it: padded to a multiple of the size divisor (`input_size`)."""

    name: str
    preset: str
    params_m: float
    gflops: float
    size_divisor: int
    size: tuple[int, int]
    input_size: tuple[int, int]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, size: tuple[int, int] = (512, 512)) -> float:
    """GFLOPs (1e9 FLOPs, a multiply-add = 2) of one forward pass of one `1 x 3 x H x W` image in eval mode.

    The model is put in eval mode (its training flag is restored afterwards); the input lives on the
    device of the model's parameters, so a meta-device model is counted without computing anything.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, *size, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def profile(
    name: str, preset: str = "paper", size: tuple[int, int] = (512, 512), num_classes: int = 19
) -> ModelProfile:
    """Parameters (M), GFLOPs at `size` (padded to the size divisor) and size divisor of zoo model `name` with
    `preset`."""
    with torch.device("meta"):
        model = build_model(name, num_classes=num_classes, preset=preset)
    input_size = padded_size(size, model.size_divisor)
    return ModelProfile(
        name=name,
        preset=preset,
        params_m=count_parameters(model) / 1e6,
        gflops=count_gflops(model, input_size),
        size_divisor=model.size_divisor,
        size=size,
        input_size=input_size,
    )
