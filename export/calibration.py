"""Real images for parity checks and int8 calibration, preprocessed exactly as the runtime does."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from cfnet.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def image_files(folder: str | Path, count: int) -> list[Path]:
    """Up to `count` image files under `folder` (recursive, sorted, spread evenly over the sorted list).

    In a Cityscapes-layout folder only `leftImg8bit/` is read (never the label images of `gtFine/`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("calibration folder not found", str(folder))
    if (folder / "leftImg8bit").is_dir():
        folder = folder / "leftImg8bit"
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "_gtFine_" not in p.name and p.is_file()
    )
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the calibration folder", str(folder))
    if count >= len(files):
        return files
    picks = np.linspace(0, len(files) - 1, count).round().astype(int)
    return [files[i] for i in sorted(set(picks.tolist()))]


def load_batches(source: str | Path | Iterable[np.ndarray], metadata: dict[str, str], count: int) -> list[np.ndarray]:
    """`count` preprocessed `1 x 3 x H x W` float32 arrays from a folder of images or from given arrays."""
    if isinstance(source, str | Path):
        return [preprocess_file(path, metadata) for path in image_files(source, count)]
    batches: list[np.ndarray] = []
    for array in _take(source, count):
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 4 or array.shape[1] != 3:
            raise UserError(f"calibration arrays must be N x 3 x H x W, got {array.shape}", "calib_images")
        batches.extend(array[i : i + 1] for i in range(array.shape[0]))
    if not batches:
        raise UserError("no calibration arrays given", "calib_images")
    return batches[:count]


def preprocess_file(path: Path, metadata: dict[str, str]) -> np.ndarray:
    """Read `path` (BGR) and preprocess it with the runtime's preprocessing for the model's metadata."""
    import cv2

    from runtime.artifact import metadata_from_props
    from runtime.files import read_image
    from runtime.preprocess import preprocess

    frame = read_image(path, cv2.IMREAD_COLOR)
    batch, _ = preprocess(frame, metadata_from_props(metadata, str(path)))
    return np.ascontiguousarray(batch, dtype=np.float32)


def _take(items: Iterable[np.ndarray], count: int) -> Iterator[np.ndarray]:
    for i, item in enumerate(items):
        if i >= count:
            return
        yield item
