"""A frame leaves inference with a mask (or scores) of its own (`runtime.stream.stages.take`): nothing the writers
hold is the backend's memory, and the time it takes still counts as the frame's postprocess."""

from __future__ import annotations

import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.backends import Backend, open_backend
from runtime.stream import run_streams
from tests.runtime.helpers import ListSource, WrappedBackend, synthetic_frames


class TrackedBackend(WrappedBackend):
    """Returns arrays of its own, as ONNX Runtime returns its arena's memory; at its third call, records which of
    the first two are still alive."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend, "tracked")
        self.returned: list[weakref.ref[np.ndarray]] = []
        self.alive_at_third: list[bool] = []
        self.third = threading.Event()

    def infer(self, images: np.ndarray) -> np.ndarray:
        if len(self.returned) == 2:
            self.alive_at_third = [ref() is not None for ref in self.returned]
            self.third.set()
        output = np.array(self.inner.infer(images))
        self.returned.append(weakref.ref(output))
        return output


def test_a_batch_output_is_released_before_the_writers_catch_up(tiny_onnx: Path) -> None:
    """Frames waiting for their writer held views of their batch's output, so ONNX Runtime's arena kept every
    batch that was not yet written, and its resident high-water mark ratcheted up over a long run (a 60-minute
    soak); a frame now leaves inference with a mask of its own."""
    masks: list[np.ndarray] = []

    def slow_writer(stream: int, index: int, frame: np.ndarray, mask: np.ndarray, blended: np.ndarray) -> None:
        if index == 0:
            assert backend.third.wait(timeout=30)  # the writer lags while inference goes on
        masks.append(mask)

    with open_backend(tiny_onnx, device="cpu") as inner:
        backend = TrackedBackend(inner)
        run_streams([ListSource(synthetic_frames(4, (48, 64), seed=3))], backend, batch=1, on_frame=slow_writer)
        expected: list[np.ndarray] = []
        run_streams(
            [ListSource(synthetic_frames(4, (48, 64), seed=3))], inner, on_frame=lambda *a: expected.append(a[3])
        )
    assert backend.alive_at_third == [False, False]
    for got, want in zip(masks, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_mask_made_after_inference_counts_as_postprocess(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The argmax moved from the writer to the inference thread (`stages.take`); the frame's postprocess latency
    still counts it."""
    import runtime.stream.stages as stages

    plain_take = stages.take

    def slow_take(item: Any, output: np.ndarray) -> None:
        time.sleep(0.05)
        plain_take(item, output)

    monkeypatch.setattr(stages, "take", slow_take)
    with open_backend(tiny_onnx, device="cpu") as backend:
        stats = run_streams([ListSource(synthetic_frames(3, (48, 64), seed=4))], backend)
    assert stats.streams[0].latency_ms["postprocess"]["median"] >= 50
