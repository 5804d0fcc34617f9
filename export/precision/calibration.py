"""Real images for parity checks and int8 calibration, preprocessed exactly as the runtime does; the held-out
images (disjoint from the calibration ones, with their labels when the folder has them) the precision
autopilot is judged on."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    return _spread(files, count)


@dataclass
class HeldOut:
    """Preprocessed held-out images; `files`, `infos` (runtime `FrameInfo`) and `labels` (trainIds at the
    image's size, None without one) when they come from a folder."""

    batches: list[np.ndarray]
    files: list[Path] = field(default_factory=list)
    infos: list[Any] = field(default_factory=list)
    labels: list[np.ndarray | None] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return bool(self.labels) and all(label is not None for label in self.labels)


def split_files(folder: str | Path, calib_count: int, heldout_count: int) -> tuple[list[Path], list[Path]]:
    """(calibration files, held-out files) of `folder`, disjoint: the held-out ones are spread evenly over the
    sorted images (at most half of them), the calibration ones over the rest."""
    files = image_files(folder, 1 << 30)
    if len(files) < 2:
        raise UserError("the precision autopilot needs at least 2 images (calibration and held-out)", str(folder))
    held = _spread(files, min(heldout_count, len(files) // 2))
    rest = [f for f in files if f not in set(held)]
    return _spread(rest, calib_count), held


def load_split(
    source: str | Path | Iterable[np.ndarray], metadata: dict[str, str], calib_count: int, heldout_count: int
) -> tuple[list[np.ndarray], HeldOut]:
    """Calibration batches and held-out images from a folder (see `split_files`) or from given arrays (the
    first `calib_count` images calibrate, the next `heldout_count` are held out)."""
    if heldout_count < 1:
        raise UserError(f"{heldout_count} held-out images: the autopilot needs at least 1", "--holdout-images")
    if isinstance(source, str | Path):
        calib, held = split_files(source, calib_count, heldout_count)
        loaded = [_labelled(path, metadata) for path in held]
        return [preprocess_file(path, metadata) for path in calib], HeldOut(
            [b for b, _, _ in loaded], held, [i for _, i, _ in loaded], [label for _, _, label in loaded]
        )
    batches = load_batches(source, metadata, calib_count + heldout_count)
    if len(batches) <= calib_count:
        raise UserError(
            f"the precision autopilot needs held-out arrays after the {calib_count} calibration ones", "calib_images"
        )
    return batches[:calib_count], HeldOut(batches[calib_count:])


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
    return _preprocessed(path, metadata)[0]


def _preprocessed(path: Path, metadata: dict[str, str]) -> tuple[np.ndarray, Any]:
    import cv2

    from runtime.artifact import metadata_from_props
    from runtime.files import read_image
    from runtime.preprocess import preprocess

    frame = read_image(path, cv2.IMREAD_COLOR)
    batch, infos = preprocess(frame, metadata_from_props(metadata, str(path)))
    return np.ascontiguousarray(batch, dtype=np.float32), infos[0]


def _labelled(path: Path, metadata: dict[str, str]) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """Preprocessed image, its `FrameInfo` and its Cityscapes label (trainIds) when the folder has one."""
    from cfnet.data.cityscapes import IMAGE_SUFFIX, LABEL_SUFFIXES, read_label

    batch, info = _preprocessed(path, metadata)
    parts = path.parts
    if path.name.endswith(IMAGE_SUFFIX) and "leftImg8bit" in parts:
        at = len(parts) - 1 - parts[::-1].index("leftImg8bit")
        stem = path.name[: -len(IMAGE_SUFFIX)]
        for suffix in LABEL_SUFFIXES:
            label = Path(*parts[:at], "gtFine", *parts[at + 1 : -1], stem + suffix)
            if label.is_file():
                return batch, info, read_label(label, suffix == LABEL_SUFFIXES[0])
    return batch, info, None


def _spread(files: list[Path], count: int) -> list[Path]:
    """`count` of `files` spread evenly over the list (all of them when there are no more)."""
    if count >= len(files):
        return list(files)
    if count < 1:
        return []
    picks = np.linspace(0, len(files) - 1, count).round().astype(int)
    return [files[i] for i in sorted(set(picks.tolist()))]


def _take(items: Iterable[np.ndarray], count: int) -> Iterator[np.ndarray]:
    for i, item in enumerate(items):
        if i >= count:
            return
        yield item
