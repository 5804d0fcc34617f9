"""The drift score of a stream against the model's `cfnet.reference`, over a sliding window, and its alert.

Per frame the caller hands over the mask's class shares and, for a model with logits, the share of
low-confidence pixels (`low_confidence_share`). Over the last `window_s` seconds of stream time:

- `js`: the Jensen-Shannon divergence (base 2, in [0, 1]) between the window's mean class shares and the
  reference's. JS rather than KL: symmetric, bounded, and defined when a class is absent on one side (a
  class the reference never saw appearing is exactly what should count).
- `low_excess`: how much of the room above the reference's low-confidence share the window has taken,
  `max(0, low - ref) / (1 - ref)` in [0, 1]: 0 as uncertain as the calibration images (or less), 1 every
  pixel uncertain. None for mask-only models (no logits, no confidence).
- `score = max(js, low_excess)`: each is in [0, 1] and each sees a failure the other misses (a darkened
  frame the model still splits into familiar proportions but doubts everywhere; fog it confidently calls
  sky), so either alone must be able to raise the score.

The alert: a warning when the score has stayed above `alert` for `hold_s` seconds, once per episode; the
episode ends when the score falls back to `alert` or below. What it cannot see: a shift that keeps both the
class proportions and the confidence (a model confidently wrong in familiar proportions), and a camera whose
normal scene differs from the calibration images (its score is high from the start: export with images
from that camera). Stream time runs backwards (a file looped, a source reconnected): the window restarts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.results.defaults import DEFAULT_HOLD_S, DEFAULT_WINDOW_S
from runtime.results.reference import Reference, top1_probability

CONFIDENCE_STRIDE = 4  # low-confidence share on every 4th row and column: a share, 16x cheaper


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0: same distribution, 1: disjoint) of two non-negative vectors,
    each normalised to sum 1."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError(f"two non-empty distributions of the same length needed, got {p.shape} and {q.shape}")
    p, q = p / p.sum(), q / q.sum()
    middle = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        seen = a > 0
        return float(np.sum(a[seen] * np.log2(a[seen] / middle[seen])))

    return min(1.0, max(0.0, (kl(p) + kl(q)) / 2))


def low_confidence_share(scores: np.ndarray, threshold: float, stride: int = CONFIDENCE_STRIDE) -> float:
    """Share of pixels of one frame's `C x H x W` logits (valid area) whose top-1 probability is below
    `threshold` (`Reference.low_threshold`)."""
    return float(np.mean(top1_probability(scores, stride) < threshold))


@dataclass(frozen=True)
class DriftReading:
    """The drift figures after a frame. `alerting`: in an alert episode (warned, score still above the
    threshold); `alert`: the warning, on the frame that starts the episode only."""

    js: float
    low_share: float | None
    low_excess: float | None
    score: float
    alerting: bool
    alert: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able figures (rounded), without the one-off message."""
        rounded = {
            k: None if v is None else round(v, 6)
            for k, v in (
                ("js", self.js),
                ("low_share", self.low_share),
                ("low_excess", self.low_excess),
                ("score", self.score),
            )
        }
        return {**rounded, "alerting": self.alerting}


class DriftMonitor:
    """One stream's drift against `reference`: `update(shares, low_share, t)` per frame -> `DriftReading`.

    `window_s`: seconds of stream time averaged; `alert`: the score threshold (None: no alert); `hold_s`: how
    long the score must stay above it before the warning; `name`: the stream, for the message.
    """

    def __init__(
        self,
        reference: Reference,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        alert: float | None = None,
        hold_s: float = DEFAULT_HOLD_S,
        name: str = "stream",
    ) -> None:
        if window_s <= 0 or hold_s < 0:
            raise ValueError(f"drift window {window_s} s must be positive and hold {hold_s} s not negative")
        if alert is not None and not 0 < alert < 1:
            raise ValueError(f"drift alert {alert} must be in (0, 1): the score is in [0, 1]")
        self.reference, self.window_s, self.alert, self.hold_s, self.name = reference, window_s, alert, hold_s, name
        self.reset()

    def reset(self) -> None:
        """Empty the window and end any episode."""
        self._frames: deque[tuple[float, np.ndarray, float | None]] = deque()
        self._share_sum = np.zeros(len(self.reference.shares))
        self._low_sum, self._low_frames = 0.0, 0
        self._above_since: float | None = None
        self._warned = False

    def update(self, shares: np.ndarray, low_share: float | None, t: float) -> DriftReading:
        """Add a frame at stream time `t` (seconds): its class shares (`C`) and low-confidence share (None
        without logits)."""
        shares = np.asarray(shares, np.float64)
        if shares.shape != self._share_sum.shape:
            raise ValueError(f"{shares.shape[0]} class shares for a reference of {len(self._share_sum)} classes")
        if self._frames and t < self._frames[-1][0]:
            self.reset()
        self._frames.append((t, shares, low_share))
        self._share_sum += shares
        if low_share is not None:
            self._low_sum += low_share
            self._low_frames += 1
        while self._frames[0][0] <= t - self.window_s:
            _, old, old_low = self._frames.popleft()
            self._share_sum -= old
            if old_low is not None:
                self._low_sum -= old_low
                self._low_frames -= 1
        mean = np.maximum(self._share_sum, 0)
        js = js_divergence(mean, self.reference.shares) if mean.sum() > 0 else 1.0
        low = low_excess = None
        if self._low_frames:
            low = self._low_sum / self._low_frames
            ref = self.reference.low_share
            low_excess = max(0.0, low - ref) / (1 - ref) if ref < 1 else 0.0
        score = max(js, low_excess or 0.0)
        return self._judge(js, low, low_excess, score, t)

    def _judge(self, js: float, low: float | None, excess: float | None, score: float, t: float) -> DriftReading:
        above = self.alert is not None and score > self.alert
        message = None
        if not above:
            self._above_since, self._warned = None, False
        else:
            if self._above_since is None:
                self._above_since = t
            if not self._warned and t - self._above_since >= self.hold_s:
                self._warned = True
                confidence = (
                    ""
                    if low is None
                    else f", low-confidence pixels {low:.0%} against {self.reference.low_share:.0%} in the reference"
                )
                message = (
                    f"{self.name}: drift score {score:.2f} above {self.alert:g} for {t - self._above_since:.0f} s "
                    f"(class-share divergence {js:.2f}{confidence}): the scene differs from the calibration images"
                )
        return DriftReading(js, low, excess, score, self._warned, message)
