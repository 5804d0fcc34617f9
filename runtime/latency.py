"""Per-stage latencies of a stream in bounded memory, reserved at the start: recent samples for percentiles, every
sample in buckets."""

from __future__ import annotations

import bisect

import numpy as np

WINDOW = 4096  # frames whose latencies the percentiles are taken over (about 2 min at 30 fps)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)  # seconds, Prometheus `le`


class Latencies:
    """The seconds one stage took per frame. A stream of any length holds at most `WINDOW` samples, in a ring
    written in place from the start (a process that runs for months does not grow while the window fills): the
    percentiles are over the latest ones; `count`, `total` and the bucket counts cover every frame.

    One thread appends (the stage's own); observers read `recent()`, `count`, `total` and `cumulative()`.
    """

    def __init__(self, window: int = WINDOW) -> None:
        self._recent = np.full(window, np.nan)  # written now, so its pages are resident from the start
        self._buckets = [0] * len(BUCKETS)
        self.count = 0
        self.total = 0.0

    def append(self, seconds: float) -> None:
        self._recent[self.count % len(self._recent)] = seconds
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            self._buckets[index] += 1
        self.count += 1
        self.total += seconds

    def __len__(self) -> int:
        return self.count

    def recent(self) -> np.ndarray:
        """The latest samples, oldest first (a copy; read while the stage appends, it may miss the newest one)."""
        count, size = self.count, len(self._recent)
        if count <= size:
            return self._recent[:count].copy()
        return np.roll(self._recent, -(count % size))

    def cumulative(self) -> list[int]:
        """How many samples were at most each of `BUCKETS` (Prometheus' cumulative `_bucket` counts)."""
        return np.cumsum(self._buckets[:]).tolist()

    def summary(self) -> dict[str, float] | None:
        """`median` and `p90` in milliseconds over the recent samples; None before the first."""
        values = self.recent()
        if not values.size:
            return None
        return {"median": float(np.median(values)) * 1e3, "p90": float(np.percentile(values, 90)) * 1e3}
