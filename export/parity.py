"""Parity of an exported model with its reference: max |Δ|, relative error and argmax agreement of logits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

FP32_MIN_AGREEMENT = 0.9999
FP32_MAX_RELATIVE_ERROR = 1e-4


@dataclass(frozen=True)
class Parity:
    """Logit comparison over one or more batches: `relative_error` is ||Δ||₂ / ||reference||₂."""

    max_abs: float
    relative_error: float
    agreement: float
    pixels: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def line(self) -> str:
        return (
            f"max |Δ| {self.max_abs:.3g}, relative error {self.relative_error:.3g}, "
            f"argmax agreement {100 * self.agreement:.3f}% of {self.pixels} pixels"
        )


def compare(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> Parity:
    """Compare (reference, candidate) logit pairs, each `N x C x H x W`, pooled over all pairs."""
    max_abs, diff_sq, ref_sq, same, pixels = 0.0, 0.0, 0.0, 0, 0
    for reference, candidate in pairs:
        if reference.shape != candidate.shape:
            raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
        ref = reference.astype(np.float64)
        diff = candidate.astype(np.float64) - ref
        max_abs = max(max_abs, float(np.abs(diff).max()))
        diff_sq += float((diff**2).sum())
        ref_sq += float((ref**2).sum())
        same += int((reference.argmax(1) == candidate.argmax(1)).sum())
        pixels += reference.shape[0] * reference.shape[2] * reference.shape[3]
    if pixels == 0:
        raise ValueError("nothing to compare")
    return Parity(max_abs, float(np.sqrt(diff_sq / max(ref_sq, 1e-30))), same / pixels, pixels)


def fp32_ok(parity: Parity) -> bool:
    """The fp32 export gate: agreement >= 99.99% and relative error <= 1e-4."""
    return parity.agreement >= FP32_MIN_AGREEMENT and parity.relative_error <= FP32_MAX_RELATIVE_ERROR
