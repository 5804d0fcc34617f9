"""Scene cuts: when consecutive frames come from different shots, so that temporal smoothing starts afresh.

The classic shot-boundary test: the Bhattacharyya distance between the grey-level histograms of consecutive
frames (downscaled first: the histogram does not need the pixels, and noise averages out). Motion within a
shot moves pixels but hardly changes their histogram; a cut to another scene, or light switched on or off,
changes it at once. It cannot see a cut between two shots of similar brightness distribution; a slow fade
is a sequence of small changes and is not a cut.
"""

from __future__ import annotations

import cv2
import numpy as np

BINS = 32
THUMBNAIL = (96, 54)  # width, height


class SceneCut:
    """`cut = detector(frame_bgr)`: whether `frame_bgr` starts a new shot (the first frame does not)."""

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"scene-cut threshold {threshold} must be in (0, 1) (a Bhattacharyya distance)")
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def __call__(self, frame_bgr: np.ndarray) -> bool:
        small = cv2.resize(frame_bgr, THUMBNAIL, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        hist = cv2.calcHist([grey], [0], None, [BINS], [0, 256])
        cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)
        previous, self._previous = self._previous, hist
        if previous is None:
            return False
        return bool(cv2.compareHist(previous, hist, cv2.HISTCMP_BHATTACHARYYA) > self.threshold)
