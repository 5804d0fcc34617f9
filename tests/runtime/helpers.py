"""Helpers of the runtime tests: a tiny ONNX model, synthetic frames and videos, sources, the CLI runner."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from cfnet.cli import main
from runtime.backends import Backend
from runtime.video import VideoSource

CLASSES = ["road", "car", "sky", "tree"]
PALETTE = [[128, 64, 128], [0, 0, 142], [70, 130, 180], [107, 142, 35]]
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def export_tiny(path: Path, metadata: dict[str, str] | None, fixed_size: tuple[int, int] | None = None) -> Path:
    """A 2-conv net (3 -> 8 -> 4 classes, logits at the input size), opset 17; dynamic N/H/W unless `fixed_size`."""
    import onnx
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, len(CLASSES), 1)
    ).eval()
    dynamic = {0: "n", 2: "h", 3: "w"}
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, *(fixed_size or (32, 32))),),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes=None if fixed_size else {"images": dynamic, "logits": dynamic},
        opset_version=17,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def tiny_metadata(input_size: str = "48x64", size_divisor: int = 8) -> dict[str, str]:
    return {
        "cfnet.model": "tiny-conv",
        "cfnet.preset": "tiny",
        "cfnet.classes": json.dumps(CLASSES),
        "cfnet.palette": json.dumps(PALETTE),
        "cfnet.mean": json.dumps(MEAN),
        "cfnet.std": json.dumps(STD),
        "cfnet.input_size": input_size,
        "cfnet.size_divisor": str(size_divisor),
        "cfnet.precision": "fp32",
        "cfnet.version": "0.1.0",
    }






def synthetic_frames(count: int, size: tuple[int, int] = (48, 64), seed: int = 0) -> list[np.ndarray]:
    """Moving coloured rectangles over a gradient (BGR uint8), enough texture for a varied argmax."""
    rng = np.random.default_rng(seed)
    h, w = size
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    frames = []
    for i in range(count):
        frame = base.copy()
        x = (i * 5) % max(1, w - 16)
        cv2.rectangle(frame, (x, h // 4), (x + 16, h // 4 + 14), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
        frames.append(frame)
    return frames


def write_video_file(path: Path, frames: list[np.ndarray], fps: float = 10.0, color: bool = True) -> Path:
    """`frames` written to `path` with OpenCV's mp4v encoder; returns `path`."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h), color)
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path




def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame OpenCV decodes from `path`, and its FPS."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


class Reference:
    """ONNX Runtime's argmax of a frame, with the letterbox written independently of `runtime.preprocess`."""

    def __init__(
        self, model: Path, input_size: tuple[int, int], divisor: int, mean: list[float] = MEAN, std: list[float] = STD
    ) -> None:
        self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self.input_size, self.divisor, self.mean, self.std = input_size, divisor, np.array(mean), np.array(std)

    def mask(self, frame_bgr: np.ndarray) -> np.ndarray:
        h, w = frame_bgr.shape[:2]
        scale = min(self.input_size[0] / h, self.input_size[1] / w)
        rh, rw = round(h * scale), round(w * scale)
        resized = frame_bgr if (rh, rw) == (h, w) else cv2.resize(frame_bgr, (rw, rh), interpolation=cv2.INTER_LINEAR)
        rgb = resized[..., ::-1].astype(np.float64) / 255.0
        chw = ((rgb - self.mean) / self.std).transpose(2, 0, 1)
        ph, pw = -(-rh // self.divisor) * self.divisor, -(-rw // self.divisor) * self.divisor
        padded = np.zeros((1, 3, ph, pw), np.float32)
        padded[0, :, :rh, :rw] = chw
        labels = self.session.run(None, {"images": padded})[0][0].argmax(axis=0)[:rh, :rw].astype(np.uint8)
        return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)


ROOT = Path(__file__).resolve().parents[2]



def cfnet(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the `cfnet` face in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err



class ListSource(VideoSource):
    """A source over given frames (the file and camera readers cannot change size mid-stream)."""

    def __init__(self, frames: list[np.ndarray], live: bool = False) -> None:
        self.name, self.live, self.fps, self.frame_count = "frames", live, 10.0, len(frames)
        self.size = (int(frames[0].shape[0]), int(frames[0].shape[1]))
        self.frames = list(frames)
        self.exhausted = threading.Event()

    def read(self) -> np.ndarray | None:
        if not self.frames:
            self.exhausted.set()
            return None
        return self.frames.pop(0)

    def release(self) -> None:
        pass



class StalledSource(ListSource):
    """A live source that delivers its frames, then blocks in `read()` like a camera that stopped sending."""

    def read(self) -> np.ndarray | None:
        if not self.frames:
            threading.Event().wait(timeout=60)
        return super().read()


class WrappedBackend(Backend):
    """A test double over a real backend: its attributes, one inference at a time; subclasses change `infer`."""

    def __init__(self, backend: Backend, name: str = "wrapped") -> None:
        self.inner, self.name = backend, name
        self.metadata, self.outputs, self.output = backend.metadata, backend.outputs, backend.output
        self.device, self.max_batch, self.path = backend.device, backend.max_batch, backend.path
        self.concurrent = False

    def infer(self, images: np.ndarray) -> np.ndarray:
        return self.inner.infer(images)

    def close(self) -> None:
        """The inner backend is closed by its owner."""
