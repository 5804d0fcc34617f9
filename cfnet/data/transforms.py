"""Training and evaluation transforms in numpy/OpenCV.

A transform is a callable `(image_rgb uint8 HxWx3, label uint8 HxW of trainIds) -> (image float32
3xHxW tensor, normalised; label int64 HxW tensor)`. The training pipeline draws all its randomness from a
`numpy.random.Generator`: the one passed to the call, else (inside a DataLoader worker) one seeded from the
worker's torch seed, so workers differ from each other and from epoch to epoch and a run is reproducible
under `torch.manual_seed`, else the transform's own generator (seeded by `seed`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import cv2
import numpy as np
import torch

from cfnet.data.labels import IGNORE_INDEX, MEAN, STD
from cfnet.errors import UserError

_SCALE = (1.0 / (255.0 * np.asarray(STD, np.float32))).astype(np.float32)
_OFFSET = (-np.asarray(MEAN, np.float32) / np.asarray(STD, np.float32)).astype(np.float32)
MEAN_RGB: tuple[int, int, int] = tuple(int(round(255 * m)) for m in MEAN)  # type: ignore[assignment]
"""The ImageNet mean as 0..255 RGB: padding with it normalises to (about) zero."""


def normalize(image_rgb: np.ndarray) -> np.ndarray:
    """uint8 (or float 0..255) RGB HxWx3 -> float32 3xHxW, ImageNet-normalised."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image_rgb.shape}")
    out = image_rgb.astype(np.float32) * _SCALE + _OFFSET
    return np.ascontiguousarray(out.transpose(2, 0, 1))


RANDOM_SCALE = (0.5, 2.0)
"""The training pipeline's random rescaling range (mmsegmentation's Cityscapes ratio range)."""


def check_crop(crop: tuple[int, int], sizes: Iterable[tuple[int, int]]) -> None:
    """Refuse a training crop larger than every image (H, W) of `sizes` even at the largest random scale: it
    would crop padding only, and its cost grows with it (a 4096x4096 crop of 128x256 images ran for minutes)."""
    sizes = list(sizes)
    if not sizes:
        return
    high = (max(h for h, _ in sizes), max(w for _, w in sizes))
    top = (int(high[0] * RANDOM_SCALE[1]), int(high[1] * RANDOM_SCALE[1]))
    if crop[0] > top[0] or crop[1] > top[1]:
        raise UserError(
            f"crop {crop[0]}x{crop[1]} is larger than the largest training image ({high[0]}x{high[1]}) even at the "
            f"largest random scale ({RANDOM_SCALE[1]:g}x)",
            f"--crop at most {top[0]}x{top[1]}",
        )


def _label_tensor(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(label)).long()


class EvalTransform:
    """Normalisation only: the evaluation pipeline."""

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(normalize(image)), _label_tensor(label)


def eval_transform() -> EvalTransform:
    """The evaluation pipeline (normalisation only)."""
    return EvalTransform()


class TrainTransform:
    """Random scale, random crop (padding the image with the mean, the label with 255), horizontal flip,
    photometric jitter, normalisation."""

    def __init__(
        self,
        crop: tuple[int, int] = (512, 512),
        scale: tuple[float, float] = RANDOM_SCALE,
        flip: bool = True,
        brightness: float = 0.25,
        contrast: float = 0.25,
        saturation: float = 0.25,
        hue: float = 10.0,
        seed: int | None = None,
    ) -> None:
        self.crop = crop
        self.scale = scale
        self.flip = flip
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.rng = np.random.default_rng(seed)
        self._worker: tuple[int, np.random.Generator] | None = None

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self.rng
        if self._worker is None or self._worker[0] != info.seed:
            self._worker = (info.seed, np.random.default_rng(info.seed))
        return self._worker[1]

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rng = rng if rng is not None else self._generator()
        s = rng.uniform(*self.scale)
        h, w = label.shape
        size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST_EXACT)
        image, label = self._crop(image, label, rng)
        image = self._jitter(image, rng)
        ch, cw = self.crop
        ph, pw = ch - label.shape[0], cw - label.shape[1]
        if ph > 0 or pw > 0:
            image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=MEAN_RGB)
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return torch.from_numpy(normalize(image)), _label_tensor(label)

    def _crop(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = label.shape
        ch, cw = min(self.crop[0], h), min(self.crop[1], w)
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        return image[y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast, saturation and hue, each applied with probability 1/2."""
        draws = rng.random(4)
        factors = rng.uniform(-1, 1, 4)
        if not (draws < 0.5).any():
            return image
        img = image.astype(np.float32)
        if draws[0] < 0.5:
            img *= 1 + self.brightness * factors[0]
        if draws[1] < 0.5:
            img = (img - img.mean()) * (1 + self.contrast * factors[1]) + img.mean()
        if draws[2] < 0.5 or draws[3] < 0.5:
            unit = (np.clip(img, 0, 255) / 255.0).astype(np.float32)  # contrast may have promoted img to float64
            hsv = cv2.cvtColor(unit, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in 0..1
            if draws[2] < 0.5:
                hsv[..., 1] = np.clip(hsv[..., 1] * (1 + self.saturation * factors[2]), 0, 1)
            if draws[3] < 0.5:
                hsv[..., 0] = np.mod(hsv[..., 0] + self.hue * factors[3], 360.0)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
        return np.clip(img, 0, 255).round().astype(np.uint8)


def seed_worker(worker_id: int) -> None:
    """`worker_init_fn` for DataLoaders: seed numpy's and Python's global generators from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
