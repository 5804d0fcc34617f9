"""The Cityscapes layout as a torch Dataset, validated when a split is scanned.

`leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png` pairs with
`gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png` when present, else `..._labelIds.png`
(mapped to trainIds through the label table). At scan time every image's PNG header and end chunk are
read (size; truncated or non-PNG files) and every label is decoded (size, ids in the table): a bad pair
fails at once, naming the file, instead of hours into training. Labels are decoded in a thread pool
(OpenCV releases the GIL); images are decoded when read, and a corrupt body then fails naming the file.
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from cfnet.data.labels import ID_TO_TRAIN_ID, IGNORE_INDEX, NUM_CLASSES, TRAIN_CLASSES, VALID_IDS
from cfnet.data.transforms import EvalTransform
from cfnet.errors import UserError

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIXES = ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_VALID_IDS = np.zeros(256, bool)
_VALID_IDS[sorted(VALID_IDS)] = True
_VALID_TRAIN_IDS = np.zeros(256, bool)
_VALID_TRAIN_IDS[list(range(NUM_CLASSES)) + [IGNORE_INDEX]] = True


class Transform(Protocol):
    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class Sample:
    """One image/label pair; `name` is `{city}_{seq}_{frame}`."""

    image: Path
    label: Path
    city: str
    name: str
    train_ids: bool  # the label file holds trainIds (`_labelTrainIds.png`), not labelIds

    @property
    def result_name(self) -> str:
        """The file name of this image's prediction under Cityscapes' result naming."""
        return f"{self.name}{IMAGE_SUFFIX}"


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) from a PNG's header; a non-PNG or truncated file is a `UserError`."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8))
            tail = f.read(8)
    except OSError as exc:
        raise UserError(f"cannot read image: {exc.strerror}", str(path)) from exc
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise UserError("not a PNG file", str(path))
    if tail != _PNG_END:
        raise UserError("truncated PNG (no IEND chunk at the end)", str(path))
    width, height = struct.unpack(">II", head[16:24])
    return height, width


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 HxWx3; an unreadable file is a `UserError` naming it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError("cannot decode image (corrupt or not an image)", str(path))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: Path, train_ids: bool) -> np.ndarray:
    """uint8 HxW trainIds (255 ignored) of a `_labelIds.png` or `_labelTrainIds.png` file, checked."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise UserError("cannot decode label (corrupt or not an image)", str(path))
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise UserError(f"label must be a single-channel 8-bit PNG, got {raw.dtype} {raw.shape}", str(path))
    valid = _VALID_TRAIN_IDS if train_ids else _VALID_IDS
    present = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
    bad = present[~valid[present]]
    if bad.size:
        kind = "trainId" if train_ids else "label id"
        raise UserError(f"unknown {kind} {int(bad[0])} (outside the Cityscapes table)", str(path))
    return raw if train_ids else ID_TO_TRAIN_ID[raw]


def scan(root: str | Path, split: str) -> list[Sample]:
    """The validated pairs of `split` under `root`, sorted by city and name."""
    root = Path(root)
    if not root.is_dir():
        raise UserError("data folder not found", str(root))
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    if not image_dir.is_dir():
        raise UserError(f"no '{split}' split: folder missing", str(image_dir))
    samples = []
    for image in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        city, name = image.parent.name, image.name[: -len(IMAGE_SUFFIX)]
        for suffix in LABEL_SUFFIXES:
            label = label_dir / city / f"{name}{suffix}"
            if label.is_file():
                samples.append(Sample(image, label, city, name, suffix == LABEL_SUFFIXES[0]))
                break
        else:
            raise UserError(f"image without label (expected {label_dir / city / (name + LABEL_SUFFIXES[1])})",
                            str(image))
    if not samples:
        raise UserError(f"empty split: no *{IMAGE_SUFFIX} files", str(image_dir))
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(_check, samples))
    return samples


def _check(sample: Sample) -> None:
    size = png_size(sample.image)
    label = read_label(sample.label, sample.train_ids)
    if label.shape != size:
        raise UserError(f"label size {label.shape[0]}x{label.shape[1]} differs from image size {size[0]}x{size[1]} "
                        f"({sample.image.name})", str(sample.label))


class CityscapesDataset(Dataset):
    """A split of a Cityscapes-layout folder: items `(image 3xHxW float32 normalised, label HxW int64)`.

    `transform` maps `(image_rgb uint8, label trainIds uint8)` to tensors (default: `EvalTransform`);
    `samples[i]` holds the file names (`result_name` is where evaluation writes the prediction).
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.transform: Transform = transform if transform is not None else EvalTransform()
        self.samples = scan(self.root, split)

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw pair: RGB uint8 HxWx3 and trainIds uint8 HxW."""
        sample = self.samples[index]
        return read_image(sample.image), read_label(sample.label, sample.train_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(*self.read(index))


def describe(root: str | Path, split: str) -> dict[str, object]:
    """Scan (validate) a split and count it: images, cities, image sizes, pixel share of each class and
    of ignored pixels."""
    samples = scan(root, split)
    counts = np.zeros(256, np.int64)
    sizes: set[tuple[int, int]] = set()
    for sample in samples:
        label = read_label(sample.label, sample.train_ids)
        sizes.add(label.shape)
        counts += np.bincount(label.ravel(), minlength=256)
    total = max(int(counts.sum()), 1)
    return {
        "split": split,
        "images": len(samples),
        "cities": sorted({s.city for s in samples}),
        "sizes": [f"{h}x{w}" for h, w in sorted(sizes)],
        "classes": {name: counts[i] / total for i, name in enumerate(TRAIN_CLASSES) if counts[i]},
        "ignored": counts[IGNORE_INDEX] / total,
    }
