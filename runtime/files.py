"""Atomic file writes: a temp file in the destination folder, then `os.replace`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import UserError

_UMASK = os.umask(0o022)  # read once at import: `os.umask` is read by setting it, which races with threads
os.umask(_UMASK)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (no half-written file on any failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
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
