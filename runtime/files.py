"""Atomic file writes: a temp file in the destination folder, then `os.replace`.

Temp names carry the writing process's id (`.<name>.<pid>.<...>part<suffix>`), so that the temp files a killed
process (SIGKILL, power loss) left behind are recognised and removed by the next run writing to that folder.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import UserError

_UMASK = os.umask(0o022)  # read once at import: `os.umask` is read by setting it, which races with threads
os.umask(_UMASK)
_PART = re.compile(r"^\..+\.(?P<pid>\d+)\.(?:[\w-]+\.)?part(?:\.\w+)?$")
_swept: set[Path] = set()
_sweep_lock = threading.Lock()


def part_path(path: str | Path) -> Path:
    """The temp name of `path` for this process: `.<stem>.<pid>.part<suffix>` beside it (the suffix is kept
    for writers that pick their format by extension). Stale temp files of dead processes are removed first."""
    path = Path(path)
    remove_stale_parts(path.parent)
    return path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")


def remove_stale_parts(folder: Path) -> list[Path]:
    """Remove the temp files in `folder` whose writing process is gone (once per folder and process)."""
    folder = folder.resolve()
    with _sweep_lock:
        if folder in _swept:
            return []
        _swept.add(folder)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        match = _PART.match(name)
        if match and not _alive(int(match["pid"])):
            try:
                (folder / name).unlink()
                removed.append(folder / name)
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (no half-written file on any failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it private; outputs are ordinary files
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Encode `image` by the suffix of `path` (`.png`: lossless, masks keep their ids) and write it atomically."""
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix or ".png", image)
    except cv2.error:  # an extension OpenCV has no encoder for
        ok = False
    if not ok:
        raise UserError("cannot encode image", str(path))
    return write_bytes(path, encoded.tobytes())
