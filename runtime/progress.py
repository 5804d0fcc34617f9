"""A minimal progress line on stderr (the runtime stays free of tqdm: an edge box has numpy, OpenCV, ORT)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`12/120 [###.......] 10% 24.1 fps`, redrawn at most ten times a second; `total=None` shows a count."""

    def __init__(self, total: int | None, label: str = "", stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.label, self.width = total, label, width
        self.stream = stream or sys.stderr
        self.start = self.last = time.perf_counter()
        self.count = 0
        self.drawn = -1

    def update(self, count: int) -> None:
        """Record `count` frames done; redraw when due."""
        self.count = count
        now = time.perf_counter()
        if now - self.last >= 0.1 or count == self.total:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        self.drawn = self.count
        fps = self.count / max(now - self.start, 1e-9)
        if self.total:
            done = min(self.count / self.total, 1.0)
            bar = "#" * round(done * self.width)
            text = f"{self.count}/{self.total} [{bar:.<{self.width}}] {done:4.0%} {fps:5.1f} fps"
        else:
            text = f"{self.count} frames {fps:5.1f} fps"
        self.stream.write(f"\r{self.label}{text}")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line (nothing when no frame was ever counted)."""
        if self.count == 0 and self.drawn < 0:
            return
        if self.drawn != self.count:
            self._draw(time.perf_counter())
        self.stream.write("\n")
        self.stream.flush()
