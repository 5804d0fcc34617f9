"""A stream's recordings: the MP4 of its overlays (one file, or rolling segments with retention) and its masks,
and what a full disk does to them.

One file (`video` is the MP4's path): a full disk ends the stream (`DiskFull`, `disk full (PATH)`) after the
frames that fit; the MP4 is finalised with exactly those frames and the masks are the same frames.

Segments (`segment_seconds`; `video` is the stream's folder): `NAME/NAME-YYYYmmddTHHMMSSZ.mp4`, a new one every
`segment_seconds` (wall clock) and after each reconnect, each written under a temp name and renamed once
finalised, so a killed process (a power loss) leaves only the current one's temp file, removed by the next
run. Masks go to `MASKS/NAME/NAME-<stamp>/<position in the segment>.png`. A full disk (or another write error)
pauses the stream's recording: the current segment is finalised with what fits, one warning is logged and
`write_errors[kind]` counts it; inference, the live view and metrics go on; once a second the folder is looked
at and recording resumes, in a new segment, when it has room again. `Retention` deletes the oldest finalised
segments (and their masks) beyond a size or an age, over every stream.
"""

from __future__ import annotations

import calendar
import errno
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np

import runtime.log as log
from runtime.errors import UserError
from runtime.files import write_image
from runtime.stream.stats import StreamStats
from runtime.video import RESERVE_BYTES, VideoWriter, free_bytes

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
RESUME_CHECK_S = 1.0  # how often a paused recording looks for room
STAMP = "%Y%m%dT%H%M%SZ"
SEGMENT = re.compile(r"^(?P<stream>.+)-(?P<stamp>\d{8}T\d{6}Z)(?:-\d+)?$")


class DiskFull(UserError):
    """A recording of a stream written to one file ran out of space: the stream ends with this error."""

    def __init__(self, where: str) -> None:
        super().__init__("disk full", where)


class Recording:
    """What one stream writes: see the module doc. `write` is called by the stream's writer thread only."""

    def __init__(
        self,
        stats: StreamStats,
        *,
        video: Path | None,
        masks: Path | None,
        fps: float,
        segment_seconds: float | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.stats, self.video, self.masks, self.fps = stats, video, masks, fps
        self.segment_seconds, self.retention = segment_seconds, retention
        self.writer: VideoWriter | None = None
        self.stem: str | None = None  # the current segment's name
        self.opened_at = 0.0  # monotonic start of the current segment
        self.position = 0  # frames written to the current file or segment
        self.connection = 0
        self.paused: str | None = None  # the kind of error that paused recording
        self.checked = 0.0
        self.warned = False  # a pause was logged and no frame has been written since
        stats.recording = "on"
        if segment_seconds is not None and video is not None:
            stats.output = str(video)

    def open(self, size: tuple[int, int]) -> None:
        """Open a single file's writer now (a bad output fails before the run starts)."""
        if self.segment_seconds is None and self.video is not None and self.writer is None:
            self.writer = VideoWriter(self.video, self.fps, size)

    def write(self, overlay: np.ndarray, mask: np.ndarray, index: int, connection: int) -> None:
        """Record one processed frame (`index`: its position in the source; `connection`: which opening of the
        source it came from)."""
        now = time.monotonic()
        size = (int(overlay.shape[0]), int(overlay.shape[1]))
        if self.paused is not None:
            if now - self.checked < RESUME_CHECK_S:
                return
            self.checked = now
            if not self._room(size):
                return
            self.paused = None
            self.stats.recording = "on"
        if self.segment_seconds is not None:
            if self.stem is not None and (
                connection != self.connection or now - self.opened_at >= self.segment_seconds
            ):
                self.close()
            if self.stem is None:
                self._start_segment(now)
        self.connection = connection
        try:
            writer = self._writer(size)
            if writer is not None and not writer.room():
                raise OSError(errno.ENOSPC, "no room for the next frame and the index", str(writer.path))
            if self.masks is not None:
                folder = self.masks / self.stem if self.stem is not None else self.masks
                write_image(folder / f"{self.position if self.stem is not None else index:06d}.png", mask)
            if writer is not None:
                writer.write(overlay)
        except OSError as exc:
            self._failed(exc, now)
            return
        self.position += 1
        if self.warned:
            self.warned = False
            log.info(f"{self.stats.name}: recording resumed", stream=self.stats.name, event="recording resumed")

    def close(self) -> None:
        """Finalise the current file or segment (nothing when none is open). A single file that cannot be
        finalised raises; a segment that cannot is removed, counted and logged."""
        writer, stem, frames = self.writer, self.stem, self.position
        self.writer, self.stem, self.position = None, None, 0
        if self.retention is not None and stem is not None and self.masks is not None:
            self.retention.active.discard(self.masks / stem)
        try:
            path = writer.finish() if writer is not None else None
        except UserError as exc:
            if self.segment_seconds is None:
                raise
            self._count("disk_full" if exc.what == "disk full" else "io")
            log.warning(f"{self.stats.name}: segment lost: {exc}", stream=self.stats.name, event="segment lost")
            if stem is not None and self.masks is not None:
                shutil.rmtree(self.masks / stem, ignore_errors=True)  # its masks go with it
            return
        if frames and (writer is None or path is not None):
            self.stats.recorded += frames
            if stem is not None:
                self.stats.segments += 1
        if path is not None and self.segment_seconds is None:
            self.stats.output = str(path)
        if self.retention is not None and stem is not None:
            self.retention.enforce()

    def _writer(self, size: tuple[int, int]) -> VideoWriter | None:
        if self.video is None:
            return None
        if self.writer is None:
            path = self.video / f"{self.stem}.mp4" if self.stem is not None else self.video
            try:
                self.writer = VideoWriter(path, self.fps, size)
            except UserError as exc:
                if self.segment_seconds is None:
                    raise
                raise OSError(errno.EIO, exc.what, str(path)) from exc
        return self.writer

    def _start_segment(self, now: float) -> None:
        stamp = time.strftime(STAMP, time.gmtime())
        stem, n = f"{self.stats.name}-{stamp}", 1
        while self._taken(stem):
            n += 1
            stem = f"{self.stats.name}-{stamp}-{n}"
        self.stem, self.opened_at, self.position = stem, now, 0
        if self.retention is not None and self.masks is not None:
            self.retention.active.add(self.masks / stem)

    def _taken(self, stem: str) -> bool:
        return (self.video is not None and (self.video / f"{stem}.mp4").exists()) or (
            self.masks is not None and (self.masks / stem).exists()
        )

    def _room(self, size: tuple[int, int]) -> bool:
        """Room for a new segment: twice what a writer keeps free, in each folder written."""
        needed = 2 * (2 * size[0] * size[1] * 3 + RESERVE_BYTES)
        return all(free_bytes(folder) >= needed for folder in (self.video, self.masks) if folder is not None)

    def _count(self, kind: str) -> None:
        self.stats.write_errors[kind] = self.stats.write_errors.get(kind, 0) + 1

    def _failed(self, exc: OSError, now: float) -> None:
        """A write failed: a single file ends the stream; segments pause (the current one finalised)."""
        kind = "disk_full" if exc.errno in DISK_FULL else "io"
        self._count(kind)
        where = str(exc.filename or self.video or self.masks)
        if self.segment_seconds is None:
            if kind == "disk_full":
                raise DiskFull(where) from exc
            raise UserError(f"cannot write ({exc.strerror or exc})", where) from exc
        self.close()
        self.paused, self.checked = kind, now
        self.stats.recording = "paused"
        if not self.warned:
            self.warned = True
            what = "disk full" if kind == "disk_full" else f"write failed ({exc.strerror or exc})"
            log.warning(
                f"{self.stats.name}: {what} ({where}); recording paused, inference goes on",
                stream=self.stats.name,
                event="recording paused",
                kind=kind,
            )


class Retention:
    """Deletes the oldest finalised segments (video and masks) under `roots` (`ROOT/NAME/NAME-<stamp>...`)
    while they hold more than `max_bytes` or are older than `max_seconds`. Shared by every stream's writer."""

    def __init__(self, roots: list[Path], max_bytes: float | None, max_seconds: float | None) -> None:
        self.roots, self.max_bytes, self.max_seconds = roots, max_bytes, max_seconds
        self.active: set[Path] = set()  # mask folders of the segments being written
        self.sizes: dict[Path, int] = {}  # finalised segments do not change: their sizes are read once
        self.lock = threading.Lock()

    def enforce(self) -> list[Path]:
        """Delete what the limits leave out; returns the deleted paths."""
        with self.lock:
            segments = self._segments()
            total = sum(size for _, _, size in segments)
            now, deleted = time.time(), []
            for stamp, paths, size in segments:
                too_big = self.max_bytes is not None and total > self.max_bytes
                too_old = self.max_seconds is not None and now - stamp > self.max_seconds
                if not (too_big or too_old):
                    break
                for path in paths:
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                    self.sizes.pop(path, None)
                    deleted.append(path)
                total -= size
            return deleted

    def _segments(self) -> list[tuple[float, list[Path], int]]:
        """(start as a Unix time, its files and folders, their bytes) per finalised segment, oldest first."""
        groups: dict[tuple[str, str], list[Path]] = {}
        for root in self.roots:
            for folder in _children(root):
                for entry in _children(folder):
                    stem = entry.name[:-4] if entry.name.endswith(".mp4") else entry.name
                    match = SEGMENT.match(stem)
                    if match and match["stream"] == folder.name and entry not in self.active:
                        groups.setdefault((match["stamp"], stem), []).append(entry)
        found: list[tuple[float, list[Path], int]] = []
        for (stamp, _), paths in sorted(groups.items()):
            found.append((calendar.timegm(time.strptime(stamp, STAMP)), paths, sum(self._size(p) for p in paths)))
        return found

    def _size(self, path: Path) -> int:
        if path not in self.sizes:
            try:
                self.sizes[path] = (
                    sum(f.stat().st_size for f in _children(path)) if path.is_dir() else path.stat().st_size
                )
            except OSError:
                return 0
        return self.sizes[path]


def _children(folder: Path) -> list[Path]:
    try:
        return [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    except OSError:
        return []
