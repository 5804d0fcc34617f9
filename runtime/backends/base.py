"""The `Backend` base every backend implements, and the array helpers the backends share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

import numpy as np

from runtime.artifact import ModelMetadata
from runtime.postprocess import valid_area

T = TypeVar("T")


class Backend(ABC):
    """A loaded model (as Polygraphy's runners): `infer(images)` maps normalised `N x 3 x H x W` float32 to what
    the model returns: `N x C x H x W` float32 logits or, from a model with a `mask` output, `N x H x W` uint8
    class ids. `runtime.postprocess.postprocess` turns either into the frames' masks.

    Every attribute a caller reads is declared here, so no caller needs `getattr`:
    `metadata`; `name` (for messages and reports); `outputs` (the model's output names, in order); `output`
    (the one `infer` returns: `mask` or `logits`); `device` (`cpu` or `cuda`: where the model runs); `max_batch`
    (the largest batch one call takes, None when unbounded); `concurrent` (whether `infer` may be called from
    several threads at once); `path` (the file or URL it was loaded from).
    """

    metadata: ModelMetadata
    name: str
    outputs: tuple[str, ...]
    output: str
    device: str
    max_batch: int | None
    concurrent: bool
    path: str

    @abstractmethod
    def infer(self, images: np.ndarray) -> np.ndarray:
        """Run the model on one batch."""

    @abstractmethod
    def close(self) -> None:
        """Release the model (idempotent)."""

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def pad_batch(images: np.ndarray, min_size: tuple[int, int]) -> np.ndarray:
    """Zero-pad `N x 3 x H x W` bottom/right to at least `min_size` (H, W): for models with a fixed input size."""
    h, w = images.shape[2:]
    if h >= min_size[0] and w >= min_size[1]:
        return images
    padded = np.zeros((*images.shape[:2], max(h, min_size[0]), max(w, min_size[1])), dtype=images.dtype)
    padded[:, :, :h, :w] = images
    return padded


def crop_output(output: np.ndarray, size: tuple[int, int], padded: tuple[int, int]) -> np.ndarray:
    """The output (logits `N x C x h x w` or mask `N x h x w`, maybe smaller than the input) of the top-left
    `size` of an input that `pad_batch` grew to `padded`."""
    if size == padded:
        return output
    return np.ascontiguousarray(valid_area(output, size, padded))


def choose_output(names: Sequence[str]) -> str:
    """The output a backend returns: `mask` when the model has one (no host argmax), else `logits`, else the first."""
    return next((n for n in ("mask", "logits") if n in names), names[0])


def as_output(array: np.ndarray) -> np.ndarray:
    """A model output as the runtime hands it on: a uint8 mask as it is, scores as float32."""
    return array if array.dtype == np.uint8 else array.astype(np.float32, copy=False)
