"""The Cityscapes label table (as cityscapesScripts' `labels.py`) and what is derived from it.

`LABELS` lists the 35 labels: id, name, trainId and colour; trainId 255 (or -1, the license plate) is ignored
in training and evaluation. The 19 training classes are those with a trainId in 0..18, in trainId order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

IGNORE_INDEX = 255


class Label(NamedTuple):
    """One row of the table: labelId, name, trainId (255 or -1 = ignored) and RGB colour."""

    id: int
    name: str
    train_id: int
    color: tuple[int, int, int]


LABELS: tuple[Label, ...] = (
    Label(0, "unlabeled", 255, (0, 0, 0)),
    Label(1, "ego vehicle", 255, (0, 0, 0)),
    Label(2, "rectification border", 255, (0, 0, 0)),
    Label(3, "out of roi", 255, (0, 0, 0)),
    Label(4, "static", 255, (0, 0, 0)),
    Label(5, "dynamic", 255, (111, 74, 0)),
    Label(6, "ground", 255, (81, 0, 81)),
    Label(7, "road", 0, (128, 64, 128)),
    Label(8, "sidewalk", 1, (244, 35, 232)),
    Label(9, "parking", 255, (250, 170, 160)),
    Label(10, "rail track", 255, (230, 150, 140)),
    Label(11, "building", 2, (70, 70, 70)),
    Label(12, "wall", 3, (102, 102, 156)),
    Label(13, "fence", 4, (190, 153, 153)),
    Label(14, "guard rail", 255, (180, 165, 180)),
    Label(15, "bridge", 255, (150, 100, 100)),
    Label(16, "tunnel", 255, (150, 120, 90)),
    Label(17, "pole", 5, (153, 153, 153)),
    Label(18, "polegroup", 255, (153, 153, 153)),
    Label(19, "traffic light", 6, (250, 170, 30)),
    Label(20, "traffic sign", 7, (220, 220, 0)),
    Label(21, "vegetation", 8, (107, 142, 35)),
    Label(22, "terrain", 9, (152, 251, 152)),
    Label(23, "sky", 10, (70, 130, 180)),
    Label(24, "person", 11, (220, 20, 60)),
    Label(25, "rider", 12, (255, 0, 0)),
    Label(26, "car", 13, (0, 0, 142)),
    Label(27, "truck", 14, (0, 0, 70)),
    Label(28, "bus", 15, (0, 60, 100)),
    Label(29, "caravan", 255, (0, 0, 90)),
    Label(30, "trailer", 255, (0, 0, 110)),
    Label(31, "train", 16, (0, 80, 100)),
    Label(32, "motorcycle", 17, (0, 0, 230)),
    Label(33, "bicycle", 18, (119, 11, 32)),
    Label(-1, "license plate", -1, (0, 0, 142)),
)

_TRAIN = sorted((label for label in LABELS if 0 <= label.train_id < IGNORE_INDEX), key=lambda label: label.train_id)

NUM_CLASSES = len(_TRAIN)
TRAIN_CLASSES: tuple[str, ...] = tuple(label.name for label in _TRAIN)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(label.color for label in _TRAIN)

ID_BY_NAME: dict[str, int] = {label.name: label.id for label in LABELS}
VALID_IDS: frozenset[int] = frozenset(label.id for label in LABELS if label.id >= 0)


def _id_to_train_id() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in LABELS:
        if label.id >= 0 and label.train_id >= 0:
            lut[label.id] = label.train_id
    return lut


def _train_id_to_id() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)  # ignored pixels are written as `unlabeled` (0)
    for label in _TRAIN:
        lut[label.train_id] = label.id
    return lut


ID_TO_TRAIN_ID: np.ndarray = _id_to_train_id()
"""uint8 lookup table, 256 entries: labelId -> trainId (255 for ignored labels and unknown ids)."""

TRAIN_ID_TO_ID: np.ndarray = _train_id_to_id()
"""uint8 lookup table, 256 entries: trainId -> labelId (the result PNGs' encoding; 255 and others -> 0)."""

COLOR_BY_ID: np.ndarray = np.zeros((256, 3), dtype=np.uint8)
"""RGB colour of each labelId (the `_gtFine_color.png` encoding; unknown ids are black)."""
for _label in LABELS:
    if _label.id >= 0:
        COLOR_BY_ID[_label.id] = _label.color

MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""ImageNet mean, RGB, images scaled to 0..1."""
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""ImageNet standard deviation, RGB, images scaled to 0..1."""
