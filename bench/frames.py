"""What a frame costs end to end: the runtime's preprocess, a runner's inference and the runtime's postprocess to
the frame's mask, and how many bytes the model hands back per frame (what a GPU copies to the host)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench.runners import Runner


def frame_metadata(model: Any, size: tuple[int, int]) -> Any:
    """The runtime's `ModelMetadata` of `model` exported at `size` (the same for every runner of the model)."""
    from export.metadata import build_metadata
    from runtime.artifact import metadata_from_props

    return metadata_from_props(build_metadata(model, size, "fp32"), "bench")


def noise_frame(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A BGR uint8 frame of `size` (H, W): noise, so no class dominates the argmax."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def frame_call(runner: Runner, frame_bgr: np.ndarray, metadata: Any) -> Callable[[], np.ndarray]:
    """A call that segments `frame_bgr` as `runtime.segment` does up to the mask: preprocess, `runner.infer`,
    postprocess (argmax for logits, crop and resize for either) to an `H x W` uint8 mask."""
    from runtime.postprocess import postprocess
    from runtime.preprocess import preprocess

    def call() -> np.ndarray:
        batch, infos = preprocess(frame_bgr, metadata)
        return postprocess(runner.infer(batch), infos)[0]

    return call


def bytes_per_frame(output: np.ndarray) -> int:
    """Bytes of a runner's output per batch item: 4 x C x H x W for float32 logits, H x W for a uint8 mask."""
    return int(output.nbytes // output.shape[0])
