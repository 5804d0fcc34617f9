"""The pipeline's shared state: a frame on its way (`Frame`), a stream's end marker (`End`), one source's state
(`Stream`) and the run's stop flag (`Run`)."""

from __future__ import annotations

import enum
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from runtime.latency import Latencies
from runtime.preprocess import FrameInfo
from runtime.stream.stats import STAGES, StreamStats
from runtime.video import VideoSource

if TYPE_CHECKING:
    from runtime.stream.recording import Recording


@dataclass
class Frame:
    """One frame from its reader to its writer. After inference (`runtime.stream.stages.take`) either `mask`: its
    final mask, or `output`: a copy of what inference returned for it (logits or a mask), for a stream whose
    results read it; `connection`: which opening of its source it came from (a new one starts a new recording
    segment)."""

    stream: Stream
    index: int
    frame: np.ndarray
    started: float
    batch: np.ndarray  # 1 x 3 x H x W
    info: FrameInfo
    ready: float = 0.0
    seq: int = -1  # position among the stream's frames given to inference (the writer's order)
    waited: float = 0.0  # seconds in the muxer
    inferred: float = 0.0  # seconds of its batch's inference
    taken: float = 0.0  # seconds making its mask (or copying its scores) after inference: its postprocess, in part
    output: np.ndarray | None = None
    mask: np.ndarray | None = None
    connection: int = 0


class Masker(Protocol):
    """What the writer needs of a stream's results (`runtime.stream.results.FrameResults`): the frame's final mask."""

    def mask(self, item: Frame, connection: int = 0) -> np.ndarray: ...


@dataclass
class End:
    """The writer's end marker: the stream's last frame is its `total`-th."""

    total: int


class Phase(enum.IntEnum):
    """Where a stream is in its life, in order: taking frames, closed (no more frames will be queued: end, error,
    stall, eviction), drained (its end marker went to the writer)."""

    OPEN = 0
    CLOSED = 1
    DRAINED = 2


class Stream:
    """One source's state: its reader's queue (guarded by the muxer's lock), writer queue and timings.

    `src`: the open source (None while it is being opened or reopened); `opener`: opens it again (None: it
    cannot be reopened); `recording`: its MP4/segments and masks (None: nothing recorded); `origin`: who added it
    ("args", "file" for a sources file, "api"); `connection`: how many times its source has been opened.
    `reading_since`: `perf_counter` when its reader entered a blocking read (None outside one);
    `stalled`: the supervisor found it blocked longer than the stall timeout.
    """

    def __init__(
        self,
        index: int,
        stats: StreamStats,
        capacity: int,
        *,
        src: VideoSource | None = None,
        opener: Callable[[], VideoSource] | None = None,
        recording: Recording | None = None,
        origin: str = "args",
    ) -> None:
        self.index, self.stats, self.src, self.opener, self.recording = index, stats, src, opener, recording
        self.name, self.live, self.origin = stats.name, stats.live, origin
        self.pending: deque[Frame] = deque()
        self.capacity = capacity
        self.outbox: queue.Queue[Frame | End] = queue.Queue(maxsize=capacity)
        self.assigned = 0  # frames given to inference so far (the next one's `seq`)
        self.phase = Phase.OPEN
        self.writer_done = threading.Event()  # its writer thread has ended: frames for it are dropped
        self.reading_since: float | None = None
        self.stalled = False
        self.connection = 0
        self.down_since: float | None = None  # monotonic start of the current outage
        self.down_before = 0.0  # seconds of the outages that ended
        self.wake = threading.Event()  # set when the stream closes: ends a reconnect's wait
        self.times: dict[str, Latencies] = {s: Latencies() for s in STAGES}
        self.started = time.perf_counter()
        self.error: BaseException | None = None
        self.results: Masker | None = None  # smoothing, shares, drift, records (runtime.stream.results)

    def depths(self) -> dict[str, int]:
        """Frames waiting now: for a batch (the muxer's queue of this stream) and for this stream's writer."""
        return {"batcher": len(self.pending), "writer": self.outbox.qsize()}

    @property
    def closed(self) -> bool:
        """No more frames will be queued."""
        return self.phase >= Phase.CLOSED

    def end(self, reason: str) -> None:
        """Record why the stream ended (the first reason wins; an error overrides)."""
        if self.stats.ended_by == "running" or reason == "error":
            self.stats.ended_by = reason
        self.stats.state = "ended"
        self.wake.set()

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            self.stats.error = str(exc) or type(exc).__name__
        self.end("error")


class Run:
    """The stop flag and the first reason every stream ended at once (interrupt, closed window, error)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reason: str | None = None
        self.error: BaseException | None = None
        self.signals = 0

    def abort(self, reason: str, error: BaseException | None = None) -> None:
        self.reason = self.reason or reason
        self.error = self.error or error
        self.stop.set()
