"""Atomic file writes: a temp file in the destination folder, then `os.replace`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import UserError


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (no half-written file on any failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
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
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise UserError("cannot encode image", str(path))
    return write_bytes(path, encoded.tobytes())
