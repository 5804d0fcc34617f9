"""Transforms: normalisation against torchvision, determinism, alignment of image and label, padding, workers."""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, Dataset

from cfnet.data.labels import MEAN, STD
from cfnet.data.transforms import EvalTransform, TrainTransform, normalize, seed_worker

COLORS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], np.uint8)


def _pair(h: int = 48, w: int = 64, block: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A label of square blocks and an image whose colour encodes the label."""
    rng = np.random.default_rng(3)
    blocks = rng.integers(0, len(COLORS), (h // block, w // block)).astype(np.uint8)
    label = np.kron(blocks, np.ones((block, block), np.uint8))
    return COLORS[label], label


def _denormalize(image: torch.Tensor) -> np.ndarray:
    rgb = image.numpy().transpose(1, 2, 0) * np.array(STD) + np.array(MEAN)
    return np.clip(rgb * 255, 0, 255)


def test_normalize_matches_torchvision() -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    expected = TF.normalize(TF.to_tensor(image), list(MEAN), list(STD))
    got = normalize(image)
    assert got.dtype == np.float32 and got.shape == (3, 5, 7)
    assert np.allclose(got, expected.numpy(), atol=1e-5)
    image_t, label_t = EvalTransform()(image, np.zeros((5, 7), np.uint8))
    assert torch.allclose(image_t, expected, atol=1e-5) and label_t.dtype == torch.int64


def test_train_transform_is_deterministic_given_a_generator() -> None:
    image, label = _pair()
    t = TrainTransform(crop=(32, 32))
    a = t(image, label, rng=np.random.default_rng(7))
    b = t(image, label, rng=np.random.default_rng(7))
    c = t(image, label, rng=np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (3, 32, 32) and a[1].shape == (32, 32) and a[1].dtype == torch.int64


def test_image_and_label_stay_aligned_under_scale_crop_and_flip() -> None:
    image, label = _pair(64, 96, 16)
    t = TrainTransform(crop=(40, 40), brightness=0, contrast=0, saturation=0, hue=0)
    controls = []
    for seed in range(12):
        img, lab = t(image, label, rng=np.random.default_rng(seed))
        rgb, lab_np = _denormalize(img), lab.numpy()
        valid = lab_np != 255
        assert set(np.unique(lab_np[valid]).tolist()) <= {0, 1, 2, 3}
        match = np.abs(rgb[valid] - COLORS[lab_np[valid]]).max(axis=1) < 40  # linear resampling blurs edges
        assert match.mean() > 0.8
        mirrored = np.abs(rgb - COLORS[np.minimum(lab_np[:, ::-1], 3)]).max(axis=2) < 40  # control: misaligned
        controls.append(mirrored.mean())
    assert np.mean(controls) < 0.6


def test_flip_happens_about_half_the_time() -> None:
    image, label = _pair(32, 32)
    t = TrainTransform(crop=(32, 32), scale=(1.0, 1.0), brightness=0, contrast=0, saturation=0, hue=0)
    outcomes = []
    for seed in range(40):
        _, lab = t(image, label, rng=np.random.default_rng(seed))
        if np.array_equal(lab.numpy(), label):
            outcomes.append(False)
        else:
            assert np.array_equal(lab.numpy(), label[:, ::-1])
            outcomes.append(True)
    assert 5 < sum(outcomes) < 35


def test_small_images_are_padded_with_the_mean_and_ignored_labels() -> None:
    image, label = _pair(16, 24)
    t = TrainTransform(crop=(32, 40), scale=(1.0, 1.0), flip=False, brightness=0, contrast=0, saturation=0, hue=0)
    img, lab = t(image, label, rng=np.random.default_rng(0))
    assert img.shape == (3, 32, 40)
    assert (lab[16:] == 255).all() and (lab[:, 24:] == 255).all()
    assert np.array_equal(lab[:16, :24].numpy(), label)
    assert img[:, 16:].abs().max() < 0.02 and img[:, :, 24:].abs().max() < 0.02  # the mean normalises to ~0


def test_photometric_jitter_changes_colours_not_labels() -> None:
    image, label = _pair(32, 32)
    t = TrainTransform(crop=(32, 32), scale=(1.0, 1.0), flip=False)
    changed = 0
    for seed in range(10):
        img, lab = t(image, label, rng=np.random.default_rng(seed))
        assert np.array_equal(lab.numpy(), label)
        changed += int(not torch.allclose(img, torch.from_numpy(normalize(image))))
    assert changed >= 5


class _Augmented(Dataset):
    def __init__(self) -> None:
        self.transform = TrainTransform(crop=(16, 16), seed=0)
        self.image, self.label = _pair(32, 32)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[torch.Tensor, float]:
        return self.transform(self.image, self.label)[0], float(np.random.random())


def _epoch(seed: int) -> tuple[list[torch.Tensor], list[float]]:
    torch.manual_seed(seed)
    loader = DataLoader(
        _Augmented(), batch_size=1, num_workers=2, worker_init_fn=seed_worker, multiprocessing_context="fork"
    )
    images, draws = [], []
    for image, draw in loader:
        images.append(image[0])
        draws.append(float(draw))
    return images, draws


def test_workers_draw_different_reproducible_augmentations() -> None:
    images, draws = _epoch(0)
    again, draws_again = _epoch(0)
    other, _ = _epoch(1)
    assert all(torch.equal(a, b) for a, b in zip(images, again, strict=True)) and draws == draws_again
    # samples 0 and 1 go to workers 0 and 1: without per-worker seeding they would be augmented alike
    assert not torch.equal(images[0], images[1]) and draws[0] != draws[1]
    assert not all(torch.equal(a, b) for a, b in zip(images, other, strict=True))
