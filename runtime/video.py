"""Video sources (file, camera index, rtsp/http URL) and an MP4 writer that finalises atomically."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import UserError
from runtime.files import check_output

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
DEFAULT_FPS = 30.0


def quiet_opencv() -> None:
    """Silence OpenCV's and FFmpeg's own stderr chatter (`can't open camera by index`, `moov atom not found`):
    the runtime reports each failure in one line. A user's `OPENCV_FFMPEG_LOGLEVEL` / `OPENCV_LOG_LEVEL` wins.

    OpenCV reads `OPENCV_FFMPEG_LOGLEVEL` once, when it first opens a video; hence the call at import below.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


quiet_opencv()


class VideoSource:
    """An opened source whose first frame has been read (so an empty source fails on opening).

    `live`: a camera or a network stream (frames keep coming at their own pace; a consumer that lags drops
    them); otherwise a file (every frame is delivered). `fps` falls back to 30 when the source reports none.
    """

    def __init__(self, spec: str) -> None:
        self.name = spec
        if spec.isdigit():
            self.live, what = True, "cannot open camera"
            self.capture = cv2.VideoCapture(int(spec))
        elif spec.lower().startswith(URL_SCHEMES):
            self.live, what = True, "cannot open stream URL"
            self.capture = cv2.VideoCapture(spec)
        else:
            self.live, what = False, "cannot open video (unreadable, unsupported format or no frames)"
            if not Path(spec).is_file():
                raise UserError("video not found", spec)
            self.capture = cv2.VideoCapture(spec)
        if not self.capture.isOpened():
            self.capture.release()
            raise UserError(what, f"index {spec}" if spec.isdigit() else spec)
        ok, first = self.capture.read()
        if not ok or first is None:
            self.capture.release()
            raise UserError("no frame from source" if self.live else "video has no frames", spec)
        self._first: np.ndarray | None = first
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else DEFAULT_FPS
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not self.live else 0
        self.frame_count: int | None = count if count > 0 else None
        self.size = (int(first.shape[0]), int(first.shape[1]))

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end of the file or when a live source is lost."""
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        ok, frame = self.capture.read()
        return frame if ok else None

    def __iter__(self) -> Iterator[np.ndarray]:
        while (frame := self.read()) is not None:
            yield frame

    def release(self) -> None:
        self.capture.release()


class VideoWriter:
    """Writes BGR frames of one size to `path` through a temp file in the same folder; `finish()` renames it."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = check_output(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        suffix = self.path.suffix or ".mp4"
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.part{suffix}")
        self.size = size
        self.frames = 0
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (size[1], size[0]))
        if not self.writer.isOpened():
            self.writer.release()
            self.tmp.unlink(missing_ok=True)
            raise UserError("cannot write video (no mp4v encoder, or the folder is not writable)", str(self.path))

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append a frame; it must have the writer's size (H, W)."""
        self.writer.write(frame_bgr)
        self.frames += 1

    def finish(self) -> Path | None:
        """Finalise the file and move it into place; with no frame written nothing is left behind."""
        self.writer.release()
        if self.frames == 0:
            self.tmp.unlink(missing_ok=True)
            return None
        os.replace(self.tmp, self.path)
        return self.path
