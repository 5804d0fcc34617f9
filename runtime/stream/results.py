"""Results as data in the stream pipeline: one `runtime.results.stage.StreamResults` per stream, called by its
writer for every frame (smoothing, shares, drift, the record), its figures in the stream's `StreamStats`.

`RunResults` is what `run_streams` makes of its `results`, `emit` and `on_result`: it checks the options against
the model before the first frame, owns the JSON lines (`runtime.results.emit.JsonLines`, shared by every stream)
and makes a `FrameResults` per stream (`for_stream`). The writer calls `FrameResults.mask(item)` in place of the
bare post-processing. Records are made only where they go somewhere (`emit`, `on_result`); shares and drift
figures always (they cost a fraction of a millisecond; the drift's confidence part a few at 512x1024).
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends import Backend
from runtime.results.emit import JsonLines, WriteFailed
from runtime.results.records import plain
from runtime.results.stage import ResultsConfig, StreamResults
from runtime.stream.state import Frame
from runtime.stream.stats import StreamStats

Record = dict[str, Any]
NO_REFERENCE = "the model has no cfnet.reference: no drift figures (export it with --calib-data to store one)"


def warn_on_stderr(message: str) -> None:
    """The default `warn`: one `warning: ...` line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def note_on_stderr(message: str) -> None:
    """The default `note`: one `note: ...` line on stderr."""
    print(f"note: {message}", file=sys.stderr, flush=True)


class RunResults:
    """The results of a run: `config` (None: `ResultsConfig()`), checked against `backend` at once (`UserError`);
    `emit`: a JSON lines target (`FILE.jsonl`, `DIR/`, `-`) or an open `JsonLines` (closed by its owner);
    `on_result(record)`: called with each record, from the stream's writer thread; `warn(message)`: the drift
    warning and lost result lines; `note(message)`: said once when records are asked of a model without a
    reference."""

    def __init__(
        self,
        config: ResultsConfig | None,
        backend: Backend,
        *,
        emit: str | Path | JsonLines | None = None,
        on_result: Callable[[Record], None] | None = None,
        warn: Callable[[str], None] = warn_on_stderr,
        note: Callable[[str], None] = note_on_stderr,
    ) -> None:
        self.config = config or ResultsConfig()
        meta = backend.metadata
        self.config.check(meta.reference, (backend.output,))  # the one output `infer` returns
        self.classes, self.reference = meta.classes, meta.reference
        self._owned = emit is not None and not isinstance(emit, JsonLines)
        self.lines = JsonLines(emit) if emit is not None and not isinstance(emit, JsonLines) else emit
        self.on_result, self.warn = on_result, warn
        self.records = self.lines is not None or on_result is not None
        if self.records and self.reference is None:
            note(NO_REFERENCE)

    def for_stream(self, name: str, source: str, stats: StreamStats, fps: float, live: bool) -> FrameResults:
        """The results of the stream `name` reading `source` (its figures go to `stats`); stream time is the
        frame's position in a file at `fps`, the time since the first frame for a `live` source."""
        frames = FrameResults(stats, fps, live, self.lines, self.on_result, self.warn)
        frames.results = StreamResults(
            self.config, self.classes, self.reference, stream=name, source=source,
            sink=frames.sink if self.records else None, warn=self.warn,
        )  # fmt: skip
        return frames

    def close(self) -> None:
        """Close the JSON lines files this object opened."""
        if self._owned and self.lines is not None:
            self.lines.close()


class FrameResults:
    """One stream's results in the pipeline (its writer thread's only): `mask(item)` per frame."""

    results: StreamResults

    def __init__(
        self,
        stats: StreamStats,
        fps: float,
        live: bool,
        lines: JsonLines | None,
        on_result: Callable[[Record], None] | None,
        warn: Callable[[str], None],
    ) -> None:
        self.stats, self.fps, self.live = stats, fps, live
        self.lines, self.on_result, self.warn = lines, on_result, warn
        self._origin: float | None = None
        self._connection = 0
        self._failing = False

    def mask(self, item: Frame, connection: int = 0) -> np.ndarray:
        """The frame's final mask (smoothed where asked); its shares and drift into the stream's stats, its
        record to the sinks when due. `connection`: which opening of the source the frame came from (a new one,
        a reconnect, starts smoothing and the drift window afresh)."""
        if connection != self._connection:
            self._connection = connection
            self.results.reset()
        if self._origin is None:
            self._origin = item.started
        time = item.started - self._origin if self.live else item.index / self.fps
        assert item.output is not None
        mask = self.results.process(item.output[0], item.info, item.frame, item.index, time)
        self.stats.shares = dict(self.results.latest_shares)
        drift = self.results.latest_drift
        self.stats.drift = None if drift is None else drift.as_dict()
        return mask

    def sink(self, record: Record) -> None:
        """A record to the JSON lines and the callback. A line that cannot be written (a full disk) is counted in
        the stream's `write_errors` and warned about once until lines are written again: results never stop
        inference."""
        if self.lines is not None:
            try:
                self.lines.write(record)
            except WriteFailed as exc:
                kind = "disk_full" if exc.errno == errno.ENOSPC else "io"
                self.stats.write_errors[kind] = self.stats.write_errors.get(kind, 0) + 1
                if not self._failing:
                    self.warn(f"{record['stream']}: result lines are being lost: {exc}")
                self._failing = True
            else:
                self._failing = False
        if self.on_result is not None:
            self.on_result(plain(record))
