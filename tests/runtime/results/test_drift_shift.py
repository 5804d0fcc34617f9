"""End to end: the export's reference, then the drift score of a video and of the same video shifted (darkened
to night, fogged). A colour-classifying convolution stands in for a trained model (the demo's model is
measured in docs/DESIGN.md): the score of a shift rises at least 3x above the in-distribution video's, which
never reaches the default alert threshold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from cfnet.data.synth import synthesize, synthesize_video
from export.onnx import export_onnx
from runtime import open_backend
from runtime.postprocess import postprocess
from runtime.preprocess import preprocess
from runtime.results.defaults import DEFAULT_ALERT
from runtime.results.drift import DriftMonitor, low_confidence_share
from runtime.results.shares import class_shares

SIZE = (64, 128)
FPS = 15


def _scores(model: Path, frames: list[np.ndarray], change: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    with open_backend(model, device="cpu") as backend:
        reference = backend.metadata.reference
        assert reference is not None
        monitor = DriftMonitor(reference, window_s=1.0)
        scores = []
        for index, frame in enumerate(frames):
            batch, infos = preprocess(change(frame), backend.metadata)
            output = backend.infer(batch)
            mask = postprocess(output, infos)[0]
            low = low_confidence_share(output[0], reference.low_threshold)
            scores.append(monitor.update(class_shares(mask, 19), low, index / FPS).score)
    return np.array(scores)


def test_a_shift_raises_the_score_and_the_video_it_was_made_for_stays_below_the_alert(tmp_path: Path) -> None:
    data = synthesize(tmp_path / "data", train=6, val=2, size=SIZE, seed=0)
    video = synthesize_video(tmp_path / "drive.mp4", frames=30, size=SIZE, seed=0, fps=FPS)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 19, 1))
    model = export_onnx(net.eval(), tmp_path / "m.onnx", size=SIZE, calib_images=data)  # type: ignore[arg-type]
    capture = cv2.VideoCapture(str(video))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    capture.release()
    normal = _scores(model, frames, lambda f: f)
    night = _scores(model, frames, lambda f: (f * 0.25).astype(np.uint8))
    fog = _scores(model, frames, lambda f: cv2.addWeighted(f, 0.35, np.full_like(f, 200), 0.65, 0))
    assert normal.max() < DEFAULT_ALERT
    assert night.mean() >= 3 * normal.mean() and fog.mean() >= 3 * normal.mean()
