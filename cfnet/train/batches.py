"""The batches a run sees, as pure functions of (seed, epoch, position): what makes `--resume` exact.

The sample order of an epoch is a permutation seeded by seed + epoch, split across ranks (as
`DistributedSampler` with `drop_last`), and every sample's augmentation draws from a numpy generator
seeded by (seed, epoch, index). So neither DataLoader workers nor the model's own random draws change
what a sample looks like, and resuming at iteration n only has to skip the first batches of its epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class SeededTransform:
    """Calls a transform `(image, label, rng)` with the generator of the sample being loaded."""

    def __init__(self, transform: Callable[..., Any]) -> None:
        self.transform = transform
        self.rng = np.random.default_rng(0)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Any:
        return self.transform(image, label, rng=self.rng)


class SeededSamples(Dataset):
    """Item `(epoch, index)` is `dataset[index]` with `augment` drawing from a generator seeded by (seed, epoch,
    index); `augment` is the `SeededTransform` the dataset applies."""

    def __init__(self, dataset: Dataset, augment: SeededTransform, seed: int) -> None:
        self.dataset = dataset
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        self.augment.rng = np.random.default_rng([self.seed, epoch, index])
        return self.dataset[index]


class EpochOrder(torch.utils.data.Sampler):
    """Keys `(epoch, index)` of one epoch for this rank, from batch `start_batch` on (drop-last batches)."""

    def __init__(
        self, size: int, *, epoch: int, seed: int, rank: int, world_size: int, batch_size: int, start_batch: int = 0
    ) -> None:
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(size, generator=generator).tolist()
        mine = order[: size // world_size * world_size][rank::world_size]
        usable = len(mine) // batch_size * batch_size
        self.epoch = epoch
        self.indices = mine[start_batch * batch_size : usable]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self.indices])

    def __len__(self) -> int:
        return len(self.indices)


def batches_per_epoch(size: int, world_size: int, batch_size: int) -> int:
    """Full batches each rank gets in one epoch (the tail is dropped)."""
    return size // world_size // batch_size
