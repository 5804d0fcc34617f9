"""Adaptive average pooling that exports to ONNX with dynamic H and W.

ONNX has no adaptive pooling, and torch's exporter refuses `nn.AdaptiveAvgPool2d` when the output size
does not divide the input. Here the pooling is two matrix products with averaging matrices built from the
runtime shape with tensor ops only (arange, comparisons), so the exported graph stays dynamic. Bin `i` of `b`
over a side of length `n` covers `[floor(i * n / b), ceil((i + 1) * n / b))`, exactly as
`nn.AdaptiveAvgPool2d`. Each matrix row holds `1 / bin length` (not 1): every product is a mean, never a
sum, so no intermediate exceeds the input's range (a sum over a 1x1 bin overflows fp16 in the mixed-fp16
ONNX, where these MatMuls run in fp16: 32,768 positions at 1024x2048).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def bin_membership(length: int, bins: int, like: Tensor) -> Tensor:
    """`bins x length` 0/1 matrix: entry (i, j) is 1 when position j lies in bin i (dtype/device of `like`).

    j is in bin i when `floor(i*n/b) <= j < ceil((i+1)*n/b)`, i.e. `i*n < (j+1)*b` and `j*b < (i+1)*n`
    for integers, so the test is exact in integer arithmetic.
    """
    positions = torch.arange(length, device=like.device).unsqueeze(0)  # 1 x n
    n = positions.shape[-1]
    index = torch.arange(bins, device=like.device).unsqueeze(1)  # b x 1
    inside = (index * n < (positions + 1) * bins) & (positions * bins < (index + 1) * n)
    return inside.to(like.dtype)


def bin_average(length: int, bins: int, like: Tensor) -> Tensor:
    """`bins x length` averaging matrix: row i is `bin_membership`'s row i divided by the bin's length."""
    inside = bin_membership(length, bins, like)
    return inside / inside.sum(1, keepdim=True)


def adaptive_avg_pool2d(x: Tensor, bins: int) -> Tensor:
    """`N x C x H x W` -> `N x C x bins x bins`, equal to `F.adaptive_avg_pool2d(x, bins)`."""
    rows = bin_average(x.shape[-2], bins, x)  # b x H
    cols = bin_average(x.shape[-1], bins, x)  # b x W
    return rows @ x @ cols.transpose(0, 1)  # N x C x b x b: means over rows, then over columns


class AdaptiveAvgPool2d(nn.Module):
    """Drop-in for `nn.AdaptiveAvgPool2d(bins)` (square output) that exports with dynamic H and W."""

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, x: Tensor) -> Tensor:
        return adaptive_avg_pool2d(x, self.bins)

    def extra_repr(self) -> str:
        return f"bins={self.bins}"
