"""Temporal smoothing of a video's masks, per stream: `ema:A`, `hold:D` and `flow:A:D` over class
probabilities, `vote:K` over masks.

- `ema:A` (models with logits): the exponential average of the softmax probabilities, `p = A * p_frame +
  (1 - A) * p`, then the argmax of `p`; A in (0, 1], 1 is no smoothing. A pixel changes label once the new
  class's averaged probability overtakes the old one's: with A < 0.5 a one-frame flip to a class as sure as
  the past one is absorbed, and a change that stays shows within a few frames (the smaller A, the later).
- `hold:D` (models with logits): label hysteresis. A pixel keeps the label it had in the previous frame
  until another class's probability exceeds that label's by more than D (in (0, 1)); computed as the argmax
  of the probabilities with D added to the held label's. It acts only where two classes are close (where
  flicker comes from) and follows a clear change at once, so it costs less accuracy than averaging when the
  camera moves (measured: docs/DESIGN.md).
- `flow:A:D` (models with logits): motion-compensated. The past average of probabilities is first carried
  along the optical flow from the previous frame to this one (OpenCV's DIS flow on the frames as the model saw
  them, at most `FLOW_SIDE` pixels a side), then averaged with this frame's as `ema:A`, then `hold:D` acts on
  the average. What moves with the camera is averaged along its motion instead of smeared across its edges,
  so the average can be steadier without lagging behind the scene (measured: docs/BENCHMARKS.md). `flow`
  alone is `flow:0.7:0.32`, `flow:A` is `flow:A:0.32`. Without frames (a caller that passes none) it is
  `ema` and `hold` without the motion.
- `vote:K` (any model, `--output mask` and Triton too): each pixel takes the label most of the last K masks
  gave it; a tie goes to the newest mask's label when it is among the tied (so K = 1 and K = 2 change
  nothing), else to the lowest class id. K in 1..255.

All keep preallocated state for the frame size they last saw (a new size starts afresh) and `reset()`,
which the caller calls on a reconnect or a scene cut (`runtime.results.scenecut`): the past of another shot
is no evidence about this one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import cv2
import numpy as np

from runtime.postprocess import argmax_classes
from runtime.results.shares import class_counts

MAX_VOTES = 255  # counts are uint8
FLOW_DEFAULTS = (0.7, 0.32)  # flow:A:D chosen on the demo's video and a longer drive (docs/BENCHMARKS.md)
FLOW_SIDE = 256  # pixels: the flow is estimated on frames at most this large a side, then scaled up


@dataclass(frozen=True)
class SmoothSpec:
    """A parsed `--smooth` value: `kind` `ema` (value A in (0, 1]), `hold` (margin D in (0, 1)), `flow` (value
    A, `margin` D) or `vote` (value K, a whole number >= 1)."""

    kind: str
    value: float
    margin: float = 0.0

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}" + (f":{self.margin:g}" if self.kind == "flow" else "")

    @property
    def needs_logits(self) -> bool:
        """Whether the smoother reads class scores (`ema`, `hold`, `flow`) rather than masks (`vote`)."""
        return self.kind in ("ema", "hold", "flow")


def parse_smoothing(text: str) -> SmoothSpec:
    """`ema:A`, `hold:D`, `flow[:A[:D]]` or `vote:K` -> `SmoothSpec`; anything else is a ValueError saying what is
    accepted."""
    kind, _, raw = text.strip().partition(":")
    kind = kind.lower()
    if kind == "flow":
        return _parse_flow(text, raw)
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if kind == "ema":
        if not 0 < value <= 1:
            raise ValueError(f"'{text}': ema:A takes a weight A in (0, 1] for the newest frame (e.g. ema:0.5)")
    elif kind == "hold":
        if not 0 < value < 1:
            raise ValueError(f"'{text}': hold:D takes a probability margin D in (0, 1) (e.g. hold:0.15)")
    elif kind == "vote":
        if not (value.is_integer() and 1 <= value <= MAX_VOTES):
            raise ValueError(f"'{text}': vote:K takes a whole number of frames K in 1..{MAX_VOTES} (e.g. vote:5)")
    else:
        raise ValueError(
            f"'{text}': expected ema:A (0 < A <= 1), hold:D (0 < D < 1) or flow:A:D, logits models, or vote:K "
            "(K >= 1 frames)"
        )
    return SmoothSpec(kind, value)


def _parse_flow(text: str, raw: str) -> SmoothSpec:
    try:
        values = [float(part) for part in raw.split(":")] if text.strip().lower() != "flow" else []
    except ValueError:
        values = [float("nan")]
    alpha, margin = [*values, *FLOW_DEFAULTS[len(values) :]] if len(values) <= 2 else (float("nan"), 0.0)
    if not (0 < alpha <= 1 and 0 <= margin < 1):
        raise ValueError(
            f"'{text}': flow:A:D takes a weight A in (0, 1] for the newest frame and a margin D in [0, 1) "
            f"(e.g. flow:{FLOW_DEFAULTS[0]:g}:{FLOW_DEFAULTS[1]:g}, or flow for that)"
        )
    return SmoothSpec("flow", alpha, margin)


Smoother = Union["EmaSmoother", "HoldSmoother", "FlowSmoother", "VoteSmoother"]


def make_smoother(spec: SmoothSpec, num_classes: int) -> Smoother:
    """The smoother of `spec` for a model of `num_classes` classes (one per stream)."""
    if spec.kind == "ema":
        return EmaSmoother(spec.value)
    if spec.kind == "hold":
        return HoldSmoother(spec.value)
    if spec.kind == "flow":
        return FlowSmoother(spec.value, spec.margin)
    return VoteSmoother(int(spec.value), num_classes)


def softmax(scores: np.ndarray, out: np.ndarray, plane: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """`scale` times the softmax over the classes (axis 0) of `C x H x W` `scores`, into `out` (`plane`: an
    `H x W` float32 scratch buffer); returns `out`."""
    np.max(scores, axis=0, out=plane)
    np.subtract(scores, plane, out=out)
    np.exp(out, out=out)
    np.sum(out, axis=0, out=plane)
    np.multiply(plane, 1.0 / scale, out=plane)
    return np.divide(out, plane, out=out)


class EmaSmoother:
    """Exponential average of class probabilities: `update(scores)` takes one frame's `C x H x W` logits and
    returns the averaged probabilities (`C x H x W` float32, this smoother's buffer: read it before the
    next `update`); their argmax is the smoothed mask (`runtime.postprocess` takes them as scores)."""

    needs_logits = True

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"ema weight {alpha} must be in (0, 1]")
        self.alpha = float(alpha)
        self._average: np.ndarray | None = None
        self._frame = np.zeros(0, np.float32)
        self._plane = np.zeros(0, np.float32)

    def reset(self) -> None:
        """Forget the past: the next frame is taken as it is."""
        self._average = None

    def update(self, scores: np.ndarray, carry: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """`carry`: moves the past average (in place) before this frame joins it (`FlowSmoother`'s motion)."""
        scores = np.asarray(scores, np.float32)
        if scores.ndim != 3:
            raise ValueError(f"ema smoothing needs C x H x W class scores, got shape {scores.shape}")
        if self._frame.shape != scores.shape:
            self._frame = np.empty_like(scores)
            self._plane = np.empty(scores.shape[1:], np.float32)
            self._average = None
        first = self._average is None
        frame = softmax(scores, self._frame, self._plane, 1.0 if first else self.alpha)
        if first:
            self._average = frame.copy()
        else:
            average = self._average
            assert average is not None
            if carry is not None:
                carry(average)
            average *= 1.0 - self.alpha
            average += frame
        assert self._average is not None
        return self._average


class HoldSmoother:
    """Label hysteresis: `update(scores)` takes one frame's `C x H x W` logits and returns its probabilities
    with `margin` added to the class each pixel held in the previous frame (`C x H x W` float32, this
    smoother's buffer, as `EmaSmoother`); their argmax is the smoothed mask, and is what is held next."""

    needs_logits = True

    def __init__(self, margin: float) -> None:
        if not 0 < margin < 1:
            raise ValueError(f"hold margin {margin} must be in (0, 1)")
        self.margin = float(margin)
        self._held: np.ndarray | None = None
        self._scores = np.zeros(0, np.float32)
        self._plane = np.zeros(0, np.float32)

    def reset(self) -> None:
        """Hold nothing: the next frame is taken as it is."""
        self._held = None

    def update(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, np.float32)
        if scores.ndim != 3:
            raise ValueError(f"hold smoothing needs C x H x W class scores, got shape {scores.shape}")
        if self._scores.shape != scores.shape:
            self._scores = np.empty_like(scores)
            self._plane = np.empty(scores.shape[1:], np.float32)
            self._held = None
        out = softmax(scores, self._scores, self._plane)
        self._held = hold(out, self._held, self.margin)
        return out


def hold(scores: np.ndarray, held: np.ndarray | None, margin: float) -> np.ndarray:
    """Add `margin` to each pixel's `held` class in `C x H x W` `scores` (in place; None: nothing held); returns
    their argmax, the labels held next."""
    if held is not None and margin > 0:
        for c in np.flatnonzero(class_counts(held, scores.shape[0])):
            np.add(scores[c], margin, out=scores[c], where=held == c)
    return argmax_classes(scores)


class FlowSmoother:
    """`ema` along the optical flow, then `hold` (see the module): `update(scores, view)` takes one frame's
    `C x H x W` logits and the frame as the model saw it (`frame_view`; None: no motion) and returns the
    averaged probabilities with the hold margin added (this smoother's buffer, as `EmaSmoother`)."""

    needs_logits = True

    def __init__(self, alpha: float, margin: float) -> None:
        if not 0 <= margin < 1:
            raise ValueError(f"flow margin {margin} must be in [0, 1)")
        self.margin = float(margin)
        self._ema = EmaSmoother(alpha)
        self._flow = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._shape: tuple[int, ...] = ()
        self._view: np.ndarray | None = None
        self._held: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the past: the next frame is taken as it is."""
        self._ema.reset()
        self._view = self._held = None

    def update(self, scores: np.ndarray, view: np.ndarray | None = None) -> np.ndarray:
        if self._shape != np.shape(scores):
            self._allocate(np.shape(scores))
        small = None if view is None else cv2.resize(view, self._small[::-1], interpolation=cv2.INTER_AREA)
        previous, self._view = self._view, small
        carry = None
        if small is not None and previous is not None:
            carry = functools.partial(self._carry, small, previous)
        average = self._ema.update(scores, carry)
        np.copyto(self._out, average)
        self._held = hold(self._out, self._held, self.margin)
        return self._out

    def _allocate(self, shape: tuple[int, ...]) -> None:
        self._shape = shape
        if len(shape) != 3:
            return  # `EmaSmoother` refuses it
        height, width = shape[1:]
        scale = min(1.0, FLOW_SIDE / max(height, width))
        self._small = (max(8, round(height * scale)), max(8, round(width * scale)))
        self._out = np.empty(shape, np.float32)
        self._grid = np.stack(np.meshgrid(np.arange(width), np.arange(height)), axis=-1).astype(np.float32)
        self.reset()

    def _carry(self, view: np.ndarray, previous: np.ndarray, average: np.ndarray) -> None:
        """Move `average` from the previous frame's pixels to this one's: each pixel takes the average of the
        point it came from (the flow from this frame to the previous one, scaled to the scores' size)."""
        height, width = self._shape[1:]
        flow = self._flow.calc(view, previous, None)  # type: ignore[call-overload]  # None: no initial flow
        flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
        flow *= (width / view.shape[1], height / view.shape[0])
        flow += self._grid
        for plane, out in zip(average, self._out, strict=True):  # `_out`'s planes as scratch
            cv2.remap(plane, flow, None, cv2.INTER_LINEAR, dst=out, borderMode=cv2.BORDER_REPLICATE)
            np.copyto(plane, out)


def frame_view(frame_bgr: np.ndarray, resized_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """The frame as the model saw it, grey: resized to `resized_size` at the top left of an `input_size` canvas
    (the letterbox `runtime.preprocess` makes), uint8."""
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
    view = np.zeros(input_size, np.uint8)
    view[: resized_size[0], : resized_size[1]] = cv2.resize(grey, resized_size[::-1], interpolation=cv2.INTER_AREA)
    return view


class VoteSmoother:
    """Per-pixel majority of the last K masks: `update(mask)` takes one frame's `H x W` uint8 class ids
    (each below `num_classes`) and returns the smoothed mask (this smoother's buffer, as `EmaSmoother`).

    The state is a uint8 vote count per class and pixel, updated plane by plane for the classes of the mask
    that enters and the one that leaves the window (OpenCV's masked add: 3-4x faster than numpy's fancy
    indexing at 512x1024), then a running maximum over the classes present in the window."""

    needs_logits = False

    def __init__(self, k: int, num_classes: int) -> None:
        if not 1 <= k <= MAX_VOTES:
            raise ValueError(f"vote window {k} must be 1..{MAX_VOTES} frames")
        if not 1 <= num_classes <= 256:
            raise ValueError(f"{num_classes} classes do not fit a uint8 mask")
        self.k, self.num_classes = int(k), int(num_classes)
        self._shape: tuple[int, int] | None = None

    def reset(self) -> None:
        """Forget the past masks."""
        self._shape = None

    def _allocate(self, shape: tuple[int, int]) -> None:
        self._shape = shape
        self._history = np.zeros((self.k, *shape), np.uint8)
        self._votes = np.zeros((self.num_classes, *shape), np.uint8)
        self._present = np.zeros(self.num_classes, np.int64)  # pixels per class over the window
        self._filled = self._next = 0
        self._ones = np.ones(shape, np.uint8)
        self._equal = np.empty(shape, bool)
        self._own = np.empty(shape, np.uint8)  # each pixel's votes for the newest mask's label
        self._best = np.empty(shape, np.uint8)
        self._top = np.empty(shape, np.uint8)
        self._fill = np.empty(shape, np.uint8)

    def update(self, mask: np.ndarray) -> np.ndarray:
        if mask.ndim != 2 or mask.dtype != np.uint8:
            raise ValueError(f"vote smoothing needs an H x W uint8 mask, got {mask.dtype} {mask.shape}")
        if self._shape != mask.shape:
            self._allocate((mask.shape[0], mask.shape[1]))
        counts = class_counts(mask, self.num_classes)
        if counts.sum() != mask.size:
            raise ValueError(f"mask holds class id {int(mask.max())}, the model has {self.num_classes} classes")
        if self._filled == self.k:  # the oldest mask leaves the window
            oldest = self._history[self._next]
            leaving = class_counts(oldest, self.num_classes)
            self._vote(oldest, leaving, cv2.subtract)
            self._present -= leaving
        else:
            self._filled += 1
        self._vote(mask, counts, cv2.add, own=True)
        self._present += counts
        self._history[self._next] = mask
        self._next = (self._next + 1) % self.k
        return self._majority(mask)

    def _vote(self, labels: np.ndarray, counts: np.ndarray, change: Any, own: bool = False) -> None:
        """Add (or take back) one vote per pixel for its label in `labels`; `own`: note each pixel's count."""
        for c in np.flatnonzero(counts):
            where = np.equal(labels, c, out=self._equal).view(np.uint8)
            plane = self._votes[c]
            change(plane, self._ones, dst=plane, mask=where)
            if own:
                cv2.copyTo(plane, where, self._own)

    def _majority(self, mask: np.ndarray) -> np.ndarray:
        """The most voted label per pixel (ties: the newest mask's label if tied, else the lowest id)."""
        best, top, fill = self._best, self._top, self._fill
        classes = np.flatnonzero(self._present)
        best.fill(classes[0])
        np.copyto(top, self._votes[classes[0]])
        for c in classes[1:]:
            votes = self._votes[c]
            more = cv2.compare(votes, top, cv2.CMP_GT)
            cv2.max(top, votes, dst=top)
            fill.fill(int(c))
            cv2.copyTo(fill, more, best)
        np.copyto(best, mask, where=self._own == top)
        return best
