"""One stream's results, per frame: smoothing (reset on scene cuts and reconnects), drift, and the record.

What a stream's writer calls for each frame (`output`: the backend's output for the frame, `C x h x w` logits
or an `h x w` mask; `info`: its `FrameInfo`): `mask = results.process(output, info, frame_bgr, index, time)`,
which is, in this order,

    scores = results.smooth_scores(output, frame_bgr, info)    # ema:A / hold:D / flow:A:D; else as it is
    mask = postprocess(scores[None], [info])[0]
    mask = results.smooth_mask(mask)                           # vote:K; else `mask` unchanged
    record = results.observe(mask, output, info, frame_index, stream_time)   # drift + the record when due

(the first three are `results.mask(output, info, frame_bgr)`, what `cfnet evaluate --video` scores).
`results.reset()` on a reconnect. `latest_shares` and `latest_drift` are what `/stats` and the Prometheus
gauges read (a reference swap per frame, no lock).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.errors import UserError
from runtime.postprocess import postprocess, valid_area
from runtime.preprocess import FrameInfo
from runtime.results.defaults import DEFAULT_HOLD_S, DEFAULT_WINDOW_S
from runtime.results.drift import DriftMonitor, DriftReading, low_confidence_share
from runtime.results.records import ResultOptions, frame_record
from runtime.results.reference import Reference
from runtime.results.scenecut import SceneCut
from runtime.results.shares import class_counts, shares_dict
from runtime.results.smoothing import FlowSmoother, SmoothSpec, frame_view, make_smoother


@dataclass(frozen=True)
class ResultsConfig:
    """What the options ask of every stream: `options` (`--regions`, `--min-area`, `--epsilon`,
    `--emit-every`), `smooth` (`--smooth`), `drift_alert` (`--drift-alert`, None: figures without a warning),
    `drift_hold_s` (`--drift-window`), `drift_window_s` (seconds averaged), `scene_cuts` (reset smoothing at
    a cut)."""

    options: ResultOptions = field(default_factory=ResultOptions)
    smooth: SmoothSpec | None = None
    drift_alert: float | None = None
    drift_hold_s: float = DEFAULT_HOLD_S
    drift_window_s: float = DEFAULT_WINDOW_S
    scene_cuts: bool = True

    def check(self, reference: Reference | None, outputs: Sequence[str]) -> None:
        """Refuse, before the first frame, what the model cannot give: a drift alert without `cfnet.reference`,
        a smoothing over class scores from a model that outputs masks only (`outputs`: the backend's)."""
        if self.drift_alert is not None and reference is None:
            raise UserError(
                "the model has no cfnet.reference (export it with --calib-data to store one)", "--drift-alert"
            )
        if self.smooth is not None and self.smooth.needs_logits and "logits" not in outputs:
            raise UserError(f"{self.smooth} reads class scores; this model outputs masks only", "--smooth vote:K")


class StreamResults:
    """The results of one stream (one object per stream, used by its writer thread only).

    `classes`: the model's class names; `reference`: the model's (None: no drift figures); `sink`: called with
    each due record (a `JsonLines.write`, the Python API's callback; None: no records are made, only the
    shares and drift figures); `warn`: called with the drift warning, once per episode."""

    def __init__(
        self,
        config: ResultsConfig,
        classes: Sequence[str],
        reference: Reference | None,
        *,
        stream: str,
        source: str,
        sink: Callable[[dict[str, Any]], None] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.config, self.classes, self.stream, self.source = config, tuple(classes), stream, source
        self.sink, self.warn = sink, warn
        spec = config.smooth
        self._smoother = None if spec is None else make_smoother(spec, len(self.classes))
        self._cuts = SceneCut() if spec is not None and config.scene_cuts else None
        self._drift = None if reference is None else DriftMonitor(
            reference, window_s=config.drift_window_s, alert=config.drift_alert, hold_s=config.drift_hold_s,
            name=stream,
        )
        self.latest_shares: Mapping[str, float] = {}
        self.latest_drift: DriftReading | None = None
        self.scene_cuts = 0
        self._observed = 0  # frames observed: `--emit-every` counts these

    def reset(self) -> None:
        """Start afresh (a reconnect): smoothing and the drift window forget the past."""
        if self._smoother is not None:
            self._smoother.reset()
        if self._cuts is not None:
            self._cuts.reset()
        if self._drift is not None:
            self._drift.reset()

    def smooth_scores(
        self, output: np.ndarray, frame_bgr: np.ndarray | None = None, info: FrameInfo | None = None
    ) -> np.ndarray:
        """The frame's output with `ema`/`hold`/`flow` applied to its class scores (other smoothings, or none: as
        it is). `frame_bgr`: the frame, to reset the smoothing at a scene cut (it is checked once per frame here)
        and, with its `info`, for `flow`'s motion."""
        if self._cuts is not None and frame_bgr is not None and self._cuts(frame_bgr):
            self.scene_cuts += 1
            assert self._smoother is not None
            self._smoother.reset()
        if self._smoother is None or not self._smoother.needs_logits:
            return output
        if output.ndim != 3:
            raise UserError(f"{self.config.smooth} reads class scores; this model outputs masks", "--smooth")
        if isinstance(self._smoother, FlowSmoother):
            view = None
            if frame_bgr is not None and info is not None:
                view = frame_view(frame_bgr, info.resized_size, info.input_size)
            return self._smoother.update(output, view)
        return self._smoother.update(output)

    def smooth_mask(self, mask: np.ndarray) -> np.ndarray:
        """The frame's mask with `vote` applied (other smoothings, or none: as it is); a mask of its own, which
        the caller may keep (the smoother's buffer is reused by the next frame)."""
        if self._smoother is None or self._smoother.needs_logits:
            return mask
        return self._smoother.update(mask).copy()

    def mask(self, output: np.ndarray, info: FrameInfo, frame_bgr: np.ndarray | None = None) -> np.ndarray:
        """The frame's final mask: `smooth_scores`, `runtime.postprocess.postprocess`, `smooth_mask`."""
        return self.smooth_mask(postprocess(self.smooth_scores(output, frame_bgr, info)[None], [info])[0])

    def process(
        self, output: np.ndarray, info: FrameInfo, frame_bgr: np.ndarray | None, frame: int, time: float
    ) -> np.ndarray:
        """One frame, everything in order: its final `mask` (returned), then `observe` (shares, drift, record)."""
        mask = self.mask(output, info, frame_bgr)
        self.observe(mask, output, info, frame, time)
        return mask

    def observe(
        self, mask: np.ndarray, output: np.ndarray | None, info: FrameInfo | None, frame: int, time: float
    ) -> dict[str, Any] | None:
        """Shares and drift of the frame's final `mask`; the record, handed to the sink and returned, when the
        frame is due and there is a sink. `output`/`info`: the raw output and geometry, for the confidence part
        of the drift (logits only)."""
        counts = class_counts(mask, len(self.classes))
        shares = counts / max(mask.size, 1)
        self.latest_shares = shares_dict(shares, self.classes)
        reading = None
        if self._drift is not None:
            low = None
            if output is not None and output.ndim == 3 and info is not None:
                scores = valid_area(output, info.resized_size, info.input_size)
                low = low_confidence_share(scores, self._drift.reference.low_threshold)
            reading = self._drift.update(shares, low, time)
            self.latest_drift = reading
            if reading.alert is not None and self.warn is not None:
                self.warn(reading.alert)
        due = self.config.options.due(self._observed)
        self._observed += 1
        if self.sink is None or not due:
            return None
        record = frame_record(
            mask, self.classes, source=self.source, stream=self.stream, frame=frame, time=time,
            options=self.config.options, drift=reading,
        )
        self.sink(record)
        return record
