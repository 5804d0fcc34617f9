"""Video sources (file, camera index, rtsp/http URL) and an MP4 writer that finalises atomically."""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import UserError
from runtime.files import check_output, part_path
from runtime.mp4 import sample_count, set_frame_size

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
DEFAULT_FPS = 30.0
MAX_CAMERA = 2**31 - 1
MP4_SUFFIXES = ("", ".mp4", ".m4v", ".mov")
RESERVE_BYTES = 256 * 1024


def is_live(spec: str) -> bool:
    """Whether a source spec names a camera (an index), a network stream, a named pipe or a character device
    (`/dev/video0`) rather than a file."""
    return spec.isdigit() or spec.lower().startswith(URL_SCHEMES) or _kind(spec) in ("fifo", "device")


def check_spec(spec: str) -> str:
    """Refuse a source spec that no opening can ever make work (a camera index beyond a C int, or a digit that is
    not ASCII: `²`), before a reconnecting reader would retry it for ever. Returns `spec`."""
    if spec.isdigit() and (not spec.isascii() or int(spec) > MAX_CAMERA):  # OpenCV takes a C int
        raise UserError(f"camera index out of range (0..{MAX_CAMERA})", spec)
    return spec


def _kind(spec: str) -> str | None:
    """ "file", "fifo", "device" (a character device), "other" (a folder, a socket) or None (nothing there)."""
    try:
        mode = os.stat(spec).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "device" if stat.S_ISCHR(mode) else "other"


def stream_names(specs: Sequence[str]) -> list[str]:
    """A file-name-safe, unique name per source: a file's stem, `camera<N>`, a URL's host and path.

    Repeated names get `-2`, `-3`, ... in order (`a.mp4 a.mp4` -> `a`, `a-2`).
    """
    names: list[str] = []
    for spec in specs:
        if spec.isdigit():
            base = f"camera{spec}"
        elif spec.lower().startswith(URL_SCHEMES):
            base = re.sub(r"[^\w.-]+", "-", spec.split("://", 1)[1].split("?", 1)[0]).strip("-.") or "stream"
        else:
            base = Path(spec).stem or "video"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


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

    `live`: a camera, a network stream, a named pipe or a character device (frames keep coming at their own
    pace; a consumer that lags drops them); otherwise a file (every frame is delivered). `fps` falls back to 30
    when the source reports none. `timeout`: seconds an opening of a network stream may block, and a read one
    second more (FFmpeg's own default is 30). `frame_count`: the frames a file says it has (for a progress bar;
    an estimate in some containers), `declared`: the frames an MP4/MOV file's sample table declares (exact),
    else None.
    """

    declared: int | None = None
    timeout: float | None = None

    def __init__(self, spec: str, timeout: float | None = None) -> None:
        self.name, self.timeout = spec, timeout
        kind = _kind(spec)
        self.path = Path(spec) if kind == "file" else None
        if check_spec(spec).isdigit():
            self.live, what = True, "cannot open camera"
            self.capture = cv2.VideoCapture(int(spec))
        elif spec.lower().startswith(URL_SCHEMES):
            self.live, what = True, "cannot open stream URL"
            # a read gives up a second after the stall timeout: the stall is the run's to find (on its clock)
            limits = [] if timeout is None else [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(timeout * 1000)]
            limits += [] if timeout is None else [cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(timeout * 1000) + 1000]
            self.capture = cv2.VideoCapture(spec, cv2.CAP_FFMPEG, limits)
        else:
            self.live = kind in ("fifo", "device")
            what = "cannot open video (unreadable, unsupported format or no frames)"
            if kind not in ("file", "fifo", "device"):
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
        self.declared = sample_count(spec, whole=False) if self.path is not None else None
        self.size = (int(first.shape[0]), int(first.shape[1]))

    def reopen(self) -> VideoSource:
        """The same source opened again (a camera back, a file from its first frame)."""
        return VideoSource(self.name, self.timeout)

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
    """Writes BGR frames of one size to `path` through a temp file in the same folder; `finish()` renames it.

    The temp name carries the process id (`runtime.files.part_path`): one left by a killed run is removed by
    the next run writing to that folder. OpenCV reports no write error (a full disk gives a file without its
    index): `room()` says whether the folder still holds this frame and the index (check it before each
    `write`), and `finish()` renames only a file whose sample table declares every frame written.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = check_output(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = part_path(self.path if self.path.suffix else self.path.with_suffix(".mp4"))
        self.size = size
        self.frames = 0
        self.finished: Path | None | bool = False
        # OpenCV truncates odd sizes: an MP4 is encoded padded to even, then declares its size (runtime.mp4)
        self.pad = (size[0] % 2, size[1] % 2) if self.path.suffix.lower() in MP4_SUFFIXES else (0, 0)
        encoded = (size[1] + self.pad[1], size[0] + self.pad[0])
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, encoded)
        if not self.writer.isOpened():
            self.writer.release()
            self.tmp.unlink(missing_ok=True)
            raise UserError("cannot write video (no mp4v encoder, or the folder is not writable)", str(self.path))

    def reserve(self) -> int:
        """Bytes to keep free for the next frame and the index written at the end: two raw frames (an encoded
        frame is smaller), FFmpeg's write buffer and 16 bytes of sample tables per frame."""
        return 2 * self.size[0] * self.size[1] * 3 + RESERVE_BYTES + 16 * (self.frames + 1)

    def room(self) -> bool:
        """Whether the folder has `reserve()` bytes free."""
        return free_bytes(self.path.parent) >= self.reserve()

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append a frame; it must have the writer's size (H, W)."""
        if any(self.pad):
            frame_bgr = cv2.copyMakeBorder(frame_bgr, 0, self.pad[0], 0, self.pad[1], cv2.BORDER_REPLICATE)
        self.writer.write(frame_bgr)
        self.frames += 1

    def finish(self) -> Path | None:
        """Finalise the file and move it into place; with no frame written nothing is left behind. An MP4 whose
        sample table does not declare every frame written (a write failed: a full disk) is removed, never
        renamed, and raises `UserError` ("disk full" where the folder has no room left).

        Idempotent: later calls return the first call's result (None after a failure).
        """
        if self.finished is not False:
            return self.finished if isinstance(self.finished, Path) else None
        self.writer.release()
        if self.frames == 0:
            self.tmp.unlink(missing_ok=True)
            self.finished = None
            return None
        try:
            checked = self.path.suffix.lower() in MP4_SUFFIXES  # other containers: as OpenCV wrote them
            if checked and sample_count(self.tmp) != self.frames:
                full = free_bytes(self.path.parent) < self.reserve()
                raise UserError("disk full" if full else "cannot finalise the video (write failed)", str(self.path))
            if any(self.pad):
                set_frame_size(self.tmp, *self.size)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            self.finished = None
            raise
        self.finished = self.path
        return self.path


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of `folder` (or of its nearest existing
    parent)."""
    for candidate in (folder, *folder.parents):
        try:
            info = os.statvfs(candidate)
        except OSError:
            continue
        return info.f_bavail * info.f_frsize
    return 0
