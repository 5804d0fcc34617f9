"""What a run of the stream pipeline reports: per stream (`StreamStats`) and for the run (`RunStats`), live and at
the end."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.latency import Latencies


class Control(Protocol):
    """What the control API needs of a run's `runtime.stream.control.StreamControl`: list, add, remove streams."""

    def list(self) -> list[dict[str, Any]]: ...

    def add(self, source: str, name: str | None = None) -> str: ...

    def remove(self, name: str) -> None: ...


STAGES = ("read", "preprocess", "wait", "infer", "postprocess", "write", "end_to_end")


@dataclass
class StreamStats:
    """What one stream did. `latency_ms[stage]` holds `median` (p50) and `p90` over its processed frames;
    `wait` is the time a frame waited for its batch. `error` says why a stream that failed ended.

    `name`: the stream's stable name (outputs, labels, the control API); `state`: "running", "reconnecting"
    (a live source being reopened) or "ended" (why: `ended_by`); `reconnects`: times its source was reopened
    after it failed, ended or stalled; `down_seconds`: seconds spent reconnecting so far; `recording`: "on",
    "paused" (disk full) or "off"; `write_errors[kind]` ("disk_full", "io"): failed writes of its recordings;
    `recorded`: frames in its finalised recordings (MP4 or segments), `segments`: segments finalised.
    """

    source: str
    output: str | None
    backend: str
    live: bool
    size: tuple[int, int]
    input_fps: float
    frames: int = 0
    read: int = 0
    dropped: int = 0
    resized: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    ended_by: str = "running"
    error: str | None = None
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)  # the newest frame's class shares (runtime.results)
    drift: dict[str, Any] | None = None  # the newest drift figures (None: the model has no reference)
    name: str = ""
    state: str = "running"
    reconnects: int = 0
    down_seconds: float = 0.0
    recording: str = "off"
    write_errors: dict[str, int] = field(default_factory=dict)
    recorded: int = 0
    segments: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


@dataclass
class RunStats:
    """A run of the pipeline: one `StreamStats` per source and the aggregate.

    `workers`: inference threads; `batch_sizes`: histogram of the batches inferred (size -> count);
    `peak_rss_mb`: the process's peak memory at the end. `latest[i]`: the newest overlay of stream i,
    `times[i]`: its stage latencies in seconds so far, `queued[i]()`: its frames waiting for a batch and for
    its writer, `started`: the `perf_counter` at the start (for a window or a live view; not serialised).
    `errors`: the exception that ended a stream (by stream index). `opened[i]`: the `perf_counter` when stream i
    was added (streams may join a running pipeline). For health checks: `last_progress`, the `time.monotonic()`
    of the last inference batch done (None before the first), `stall_timeout` (seconds), and `control`, which
    lists, adds and removes streams while the run goes on (`runtime.stream.control.StreamControl`).
    """

    streams: list[StreamStats]
    backend: str
    batch: int
    batch_timeout_ms: float
    workers: int = 1
    frames: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    ended_by: str = "running"
    peak_rss_mb: float | None = None
    latest: list[np.ndarray | None] = field(default_factory=list, repr=False)
    times: list[dict[str, Latencies]] = field(default_factory=list, repr=False)
    queued: list[Callable[[], dict[str, int]]] = field(default_factory=list, repr=False)
    started: float | None = None
    errors: dict[int, BaseException] = field(default_factory=dict, repr=False)
    opened: list[float] = field(default_factory=list, repr=False)
    last_progress: float | None = None
    stall_timeout: float = 10.0
    control: Control | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "streams": [s.to_dict() for s in self.streams],
            "aggregate": {
                "backend": self.backend,
                "streams": len(self.streams),
                "batch": self.batch,
                "batch_timeout_ms": self.batch_timeout_ms,
                "workers": self.workers,
                "frames": self.frames,
                "dropped": sum(s.dropped for s in self.streams),
                "seconds": self.seconds,
                "fps": self.fps,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "ended_by": self.ended_by,
                "peak_rss_mb": self.peak_rss_mb,
            },
        }

    def snapshot(self) -> dict[str, Any]:
        """`to_dict()` while the run goes on: the latencies, seconds and rates so far (the summary at the end)."""
        summary = self.to_dict()
        if self.started is None or self.ended_by != "running":
            return summary
        now = time.perf_counter()
        elapsed = now - self.started
        live = zip(summary["streams"], self.times, self.queued, self.opened, strict=False)
        for stream, times, queued, opened in live:
            if stream["ended_by"] == "running":
                seconds = now - max(opened, self.started)
                stream["queued"] = queued()
                stream["seconds"] = seconds
                stream["fps"] = stream["frames"] / seconds if seconds > 0 else 0.0
                stream["latency_ms"] = latency_summary(times)
        aggregate = summary["aggregate"]
        aggregate["seconds"] = elapsed
        aggregate["fps"] = aggregate["frames"] / elapsed if elapsed > 0 else 0.0
        return summary


def latency_summary(times: Mapping[str, Latencies]) -> dict[str, dict[str, float]]:
    """Per stage, the `median` and `p90` in milliseconds of its recent latencies (`runtime.latency.WINDOW`)."""
    summary = {}
    for stage, latencies in list(times.items()):
        values = latencies.summary()
        if values is not None:
            summary[stage] = values
    return summary


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB (Linux `VmHWM`; None elsewhere).

    Not `getrusage`'s `ru_maxrss`: Linux carries the parent's peak across fork and exec into it.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match[1]) / 1024 if match else None
