"""`segment(frame, backend)`: one frame through pre-processing, the backend and post-processing."""

from __future__ import annotations

import numpy as np

from runtime.backends import Backend
from runtime.postprocess import colorize, draw_legend, overlay, postprocess
from runtime.preprocess import preprocess, to_bgr


def segment(
    frame_bgr: np.ndarray, backend: Backend, alpha: float = 0.5, legend: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """`(mask, overlay)`: the `H x W` uint8 trainId mask and the BGR frame with the coloured mask blended in."""
    frame = to_bgr(frame_bgr)
    batch, infos = preprocess(frame, backend.metadata)
    mask = postprocess(backend.infer(batch), infos)[0]
    blended = overlay(frame, colorize(mask, backend.metadata.palette), alpha)
    if legend:
        blended = draw_legend(blended, mask, backend.metadata.classes, backend.metadata.palette)
    return mask, blended
