"""Video-stream segmentation of 1..N sources in one pipeline.

One reader thread per source (decode, adapt grayscale/BGRA and off-size frames, pre-process) -> one batcher
that forms batches across the sources -> `workers` inference threads -> one writer thread per source
(argmax, overlay, encode, callbacks). `run_stream` (one source) and `run_streams` (several) both run this
pipeline.

Per stream: order is kept; a file loses no frame (its reader blocks when its queue is full); a live source
drops its own oldest waiting frame when inference lags; a source that ends, fails or stalls
(`stall_timeout`) ends its own stream (its MP4 finalised) while the others go on. Ctrl-C, SIGTERM, a closed
window or an inference error stop every thread at once; every MP4 is finalised on any exit.

The batcher runs when an inference thread asks for work: it takes the frames waiting at that moment, round
robin over the streams, and waits for more only while the batch is not full and its oldest frame has waited
less than `batch_timeout_ms` (DeepStream's `batched-push-timeout`). A batch holds frames of one input size
only (the letterboxed, padded canvas): padding a frame further would change what a model with global context
(pyramid pooling, attention) sees, so masks would differ from a single-stream run.

Several inference threads (a backend whose `infer` may run concurrently: ONNX Runtime) keep the cores busy
while one call is in a serial part of the graph; their batches finish out of order, so the batcher numbers
each stream's frames and the stream's writer puts them back in that order before writing.

`RunStats` is the one place an observer reads the live state (counters, the newest overlay per stream):
the pipeline updates it in place, without locks on the hot path.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import cv2
import numpy as np

from runtime.backend import Backend
from runtime.errors import UserError
from runtime.latency import Latencies
from runtime.postprocess import colorize, draw_legend, overlay, palette_lut, postprocess
from runtime.preprocess import FrameInfo, preprocess, to_bgr
from runtime.video import VideoSource, VideoWriter, stream_names

STAGES = ("read", "preprocess", "wait", "infer", "postprocess", "write", "end_to_end")
WINDOW = "cfnet stream"
READER_GRACE = 2.0  # seconds to wait, after the end, for a reader blocked in a source's read()
DEFAULT_BATCH_TIMEOUT_MS = 40.0  # one frame interval at 25 fps
DEFAULT_STALL_TIMEOUT_S = 10.0
CPU_WORKERS = 2  # inference calls in flight for several sources on a CPU (docs/BENCHMARKS.md, Multi-stream)
FrameCallback = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]
StreamFrameCallback = Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], None]
ProgressCallback = Callable[[int], None]


@dataclass
class StreamStats:
    """What one stream did. `latency_ms[stage]` holds `median` (p50) and `p90` over its processed frames;
    `wait` is the time a frame waited for its batch. `error` says why a stream that failed ended."""

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

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class RunStats:
    """A run of the pipeline: one `StreamStats` per source and the aggregate.

    `workers`: inference threads; `batch_sizes`: histogram of the batches inferred (size -> count);
    `peak_rss_mb`: the process's peak memory at the end. `latest[i]`: the newest overlay of stream i,
    `times[i]`: its stage latencies in seconds so far, `queued[i]()`: its frames waiting for a batch and for
    its writer, `started`: the `perf_counter` at the start (for a window or a live view; not serialised).
    `errors`: the exception that ended a stream.
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
        elapsed = time.perf_counter() - self.started
        for stream, times, queued in zip(summary["streams"], self.times, self.queued, strict=False):
            if stream["ended_by"] == "running":
                stream["queued"] = queued()
                stream["seconds"] = elapsed
                stream["fps"] = stream["frames"] / elapsed if elapsed > 0 else 0.0
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


@dataclass
class _Item:
    stream: int
    index: int
    frame: np.ndarray
    started: float
    batch: np.ndarray  # 1 x 3 x H x W
    info: FrameInfo
    ready: float = 0.0
    seq: int = -1  # position among the stream's frames given to inference (the writer's order)
    waited: float = 0.0  # seconds in the batcher
    inferred: float = 0.0  # seconds of its batch's inference
    logits: np.ndarray | None = None


@dataclass
class _End:
    """The writer's end marker: the stream's last frame is its `total`-th."""

    total: int


class _Stream:
    """One source's state: its reader's queue (guarded by the batcher's lock), writer queue and timings."""

    def __init__(
        self, index: int, src: VideoSource, live: bool, writer: VideoWriter | None, stats: StreamStats, capacity: int
    ) -> None:
        self.index, self.src, self.live, self.writer, self.stats = index, src, live, writer, stats
        self.pending: deque[_Item] = deque()
        self.capacity = capacity
        self.outbox: queue.Queue[_Item | _End] = queue.Queue(maxsize=capacity)
        self.assigned = 0  # frames given to inference so far (the next one's `seq`)
        self.closed = False  # no more frames will be queued (end, error, stall, eviction)
        self.drained = False  # its end marker went to the writer
        self.failed = False  # its writer is gone: drop its frames
        self.reading_since: float | None = None
        self.times: dict[str, Latencies] = {s: Latencies() for s in STAGES}
        self.started = time.perf_counter()
        self.error: BaseException | None = None

    def depths(self) -> dict[str, int]:
        """Frames waiting now: for a batch (the batcher's queue of this stream) and for this stream's writer."""
        return {"batcher": len(self.pending), "writer": self.outbox.qsize()}

    def end(self, reason: str) -> None:
        """Record why the stream ended (the first reason wins; an error overrides)."""
        if self.stats.ended_by == "running" or reason == "error":
            self.stats.ended_by = reason

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            self.stats.error = str(exc) or type(exc).__name__
        self.end("error")


class _Run:
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


class _Batcher:
    """Frames of every stream wait here; `next_batch()` forms a batch across the streams (see the module doc)."""

    def __init__(self, streams: list[_Stream], size: int, timeout_s: float, stall_s: float, run: _Run) -> None:
        self.streams, self.size, self.timeout, self.stall, self.run = streams, size, timeout_s, stall_s, run
        self.cond = threading.Condition()
        self.turn = 0

    def put(self, stream: _Stream, item: _Item) -> bool:
        """Queue a frame (a live stream drops its oldest waiting one when full; a file waits for room).

        False when the stream no longer takes frames (it was closed, or the run is stopping).
        """
        with self.cond:
            while len(stream.pending) >= stream.capacity and not stream.closed and not self.run.stop.is_set():
                if stream.live:
                    stream.pending.popleft()
                    stream.stats.dropped += 1
                else:
                    self.cond.wait(0.05)
            if stream.closed or self.run.stop.is_set():
                return False
            item.ready = time.perf_counter()
            stream.pending.append(item)
            self.cond.notify_all()
            return True

    def close(self, stream: _Stream, reason: str, drop: bool = False) -> None:
        """No more frames from `stream` (`drop`: also forget those waiting)."""
        with self.cond:
            if not stream.closed:
                stream.closed = True
                stream.end(reason)
            if drop:
                stream.pending.clear()
            self.cond.notify_all()

    def next_batch(self) -> tuple[list[_Item], list[_Stream]] | None:
        """`(items, streams that ended)`, or None when every stream has ended (and the caller holds no frame)
        or the run is stopping. Once every stream has ended, frames held for a batch go at once."""
        items: list[_Item] = []
        with self.cond:
            while not self.run.stop.is_set():
                self._take(items)
                ended = [s for s in self.streams if s.closed and not s.pending and not s.drained]
                for s in ended:
                    s.drained = True
                now = time.perf_counter()
                finished = all(s.drained for s in self.streams)  # no frame will come: send what is held
                if ended or len(items) >= self.size or (items and (finished or now - items[0].ready >= self.timeout)):
                    self.cond.notify_all()  # room for the readers
                    return items, ended
                if finished:
                    return None
                self._evict_stalled(now)
                wait = self.timeout - (now - items[0].ready) if items else 0.05
                self.cond.wait(max(0.001, min(wait, 0.05)))
        return None

    def _take(self, items: list[_Item]) -> None:
        """Move waiting frames into `items`, round robin from a rotating first stream, one input size only."""
        canvas = items[0].batch.shape[2:] if items else None
        order = self.streams[self.turn :] + self.streams[: self.turn]
        self.turn = (self.turn + 1) % len(self.streams)
        progress = True
        while progress and len(items) < self.size:
            progress = False
            for s in order:
                if len(items) >= self.size:
                    break
                if s.pending and (canvas is None or s.pending[0].batch.shape[2:] == canvas):
                    item = s.pending.popleft()
                    item.seq, s.assigned = s.assigned, s.assigned + 1
                    items.append(item)
                    canvas = items[0].batch.shape[2:]
                    progress = True

    def _evict_stalled(self, now: float) -> None:
        for s in self.streams:
            if not s.closed and s.reading_since is not None and now - s.reading_since > self.stall:
                s.closed = True
                s.end("stalled")


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


def gui_available() -> bool:
    """Whether this OpenCV build can open a window (`opencv-python-headless` cannot)."""
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        cv2.destroyWindow(WINDOW)
    except cv2.error:
        return False
    return True


def max_batch(backend: Backend) -> int | None:
    """The largest batch `backend` accepts (None: any), from its `max_batch` attribute where it has one."""
    value = getattr(backend, "max_batch", None)
    return int(value) if isinstance(value, int) else None


def default_batch(backend: Backend, sources: int) -> int:
    """The number of sources capped by the model's largest batch; 1 where the model runs on the CPU.

    On a CPU a batch does not run faster per frame than single frames (ONNX Runtime parallelises inside each
    operator, and a batch's larger activations leave the caches: measured 5.4-6.2 frames/s at batch 4 against
    7.3 at batch 1 for 4 streams of cfnet-pspnet tiny at 256x512 on 2 cores, docs/BENCHMARKS.md); one
    pipeline at batch 1 already keeps the cores busy. A GPU is what batching feeds.
    """
    if getattr(backend, "device", None) == "cpu":
        return 1
    limit = max_batch(backend)
    return min(sources, limit or sources)


def default_workers(backend: Backend, sources: int) -> int:
    """Inference threads: `CPU_WORKERS` for several sources on a CPU backend whose `infer` may run concurrently
    (ONNX Runtime), else one.

    One call at a time leaves cores idle in each call's serial stretches (small operators, the pyramid's
    pooling, the hand-over to the writers); a second call in flight fills them. Measured on 2 cores, 4 streams
    of 256x512 through tiny cfnet-pspnet: 41-43 frames/s with one worker (two intra-op threads), 58-61 with
    two workers of one intra-op thread each (`worker_threads`), 58-63 with three, against 50-56 for 4
    separate processes. A single source keeps one call at a time (its latency, not its throughput, first).
    """
    if sources > 1 and getattr(backend, "concurrent", False) and getattr(backend, "device", None) == "cpu":
        return CPU_WORKERS
    return 1


def worker_threads(workers: int) -> int:
    """ONNX Runtime intra-op threads for each of `workers` concurrent calls: this process's cores shared out."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


def check_workers(backend: Backend, workers: int) -> None:
    """Refuse inference threads a backend cannot serve (one whose `infer` is not safe to call concurrently)."""
    if workers < 1:
        raise UserError(f"inference workers must be >= 1, got {workers}", "--infer-workers")
    if workers > 1 and not getattr(backend, "concurrent", False):
        raise UserError(
            f"{backend.name} runs one inference at a time; use --infer-workers 1", str(getattr(backend, "path", ""))
        )


def check_batch(backend: Backend, batch: int) -> None:
    """Refuse a batch the model cannot take, naming the fix."""
    limit = max_batch(backend)
    if limit is None or batch <= limit:
        return
    where = str(getattr(backend, "path", backend.name))
    if where.endswith((".engine", ".plan")):
        raise UserError(
            f"the engine's profile takes batches of at most {limit}, asked for {batch}; use --batch {limit} or "
            f"rebuild it with `cfnet build-engine --max-shape {batch}x3xHxW`",
            where,
        )
    raise UserError(
        f"the model takes batches of at most {limit} (static batch dimension), asked for {batch}; use --batch "
        f"{limit} or export it with a dynamic batch (`cfnet export onnx`)",
        where,
    )


def run_stream(
    source: str | VideoSource,
    backend: Backend,
    out: str | Path | None = None,
    *,
    alpha: float = 0.5,
    max_frames: int | None = None,
    show: bool = False,
    legend: bool = False,
    on_frame: FrameCallback | None = None,
    progress: ProgressCallback | None = None,
    queue_size: int = 4,
    live: bool | None = None,
    batch: int = 1,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S,
) -> StreamStats:
    """Segment every frame of `source` (a path, a camera index as digits, a URL, or an open `VideoSource`,
    which is released at the end): `run_streams` with one source.

    `out`: MP4 of the overlays (the source's size and FPS). `on_frame(index, frame, mask, overlay)` is called
    in order for each processed frame (index = position in the source, so drops show as gaps); `progress(done)`
    after each one. `live` overrides whether the source drops frames under lag (default: cameras and URLs).
    Returns the stream's `StreamStats`; Ctrl-C or SIGTERM ends the run early with `ended_by="interrupted"`
    or `"terminated"`. An error of the stream is raised once its MP4 is finalised.
    """
    callback: StreamFrameCallback | None = None
    if on_frame is not None:
        frame_callback = on_frame

        def callback(stream: int, index: int, frame: np.ndarray, mask: np.ndarray, blended: np.ndarray) -> None:
            frame_callback(index, frame, mask, blended)

    result = run_streams(
        [source],
        backend,
        outs=[out],
        alpha=alpha,
        max_frames=max_frames,
        show=show,
        legend=legend,
        on_frame=callback,
        progress=progress,
        queue_size=queue_size,
        live=live,
        batch=batch,
        stall_timeout=stall_timeout,
    )
    if result.errors:
        raise result.errors[0]
    return result.streams[0]


def run_streams(
    sources: Sequence[str | VideoSource],
    backend: Backend,
    out_dir: str | Path | None = None,
    *,
    outs: Sequence[str | Path | None] | None = None,
    batch: int | None = None,
    batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S,
    alpha: float = 0.5,
    max_frames: int | None = None,
    show: bool = False,
    legend: bool = False,
    on_frame: StreamFrameCallback | None = None,
    progress: ProgressCallback | None = None,
    queue_size: int = 4,
    live: bool | None = None,
    on_start: Callable[[RunStats], None] | None = None,
    infer_workers: int | None = None,
) -> RunStats:
    """Segment several sources in one pipeline (paths, camera indices, URLs or open `VideoSource`s, all
    released at the end).

    `out_dir`: one MP4 per source, named by `runtime.video.stream_names` (or `outs`: a path or None per
    source). `batch`: frames per inference (default: `default_batch`: the number of sources capped by what
    the model takes, 1 on a CPU); `batch_timeout_ms`: the longest the oldest frame of an unfilled batch
    waits; `stall_timeout`: seconds a source may block in a read before its stream is ended
    (`ended_by="stalled"`); `infer_workers`: inference calls in flight at once (default: `default_workers`;
    open an ONNX Runtime backend with `threads=worker_threads(workers)` so that they share the cores).
    `on_frame(stream, index, frame, mask, overlay)` is called in order per stream; `progress(done)` with the
    frames done over all streams; `on_start(stats)` hands an observer the live `RunStats` before the first
    frame. A stream that fails ends alone (`ended_by="error"`, the exception in `RunStats.errors`); an
    inference error stops the run and is raised once every MP4 is finalised.
    """
    if not sources:
        raise UserError("no source to stream", "give at least one video, camera or URL")
    if show and not gui_available():
        raise UserError(
            "--show needs OpenCV with GUI support", "pip install opencv-python instead of the headless build"
        )
    size = batch if batch is not None else default_batch(backend, len(sources))
    if size < 1:
        raise UserError(f"batch must be >= 1, got {size}", "--batch")
    check_batch(backend, size)
    workers = infer_workers if infer_workers is not None else default_workers(backend, len(sources))
    check_workers(backend, workers)
    if outs is None:
        names = stream_names([s.name if isinstance(s, VideoSource) else str(s) for s in sources])
        outs = [Path(out_dir) / f"{n}.mp4" for n in names] if out_dir is not None else [None] * len(sources)
    if len(outs) != len(sources):
        raise UserError(f"{len(outs)} outputs for {len(sources)} sources", "outs")
    _refuse_overwriting_inputs(sources, outs)
    opened: list[VideoSource] = []
    streams: list[_Stream] = []
    run = _Run()
    result = RunStats(
        streams=[], backend=backend.name, batch=size, batch_timeout_ms=batch_timeout_ms, workers=workers
    )
    threads: list[threading.Thread] = []
    readers: list[threading.Thread] = []
    previous: dict[int, Any] = {}
    try:
        for source in sources:
            opened.append(source if isinstance(source, VideoSource) else VideoSource(str(source)))
        for i, (src, out) in enumerate(zip(opened, outs, strict=True)):
            is_live = src.live if live is None else live
            writer = VideoWriter(out, src.fps, src.size) if out is not None else None
            stats = StreamStats(
                source=src.name, output=None, backend=backend.name, live=is_live, size=src.size, input_fps=src.fps
            )
            streams.append(_Stream(i, src, is_live, writer, stats, max(1, 2 if is_live else queue_size)))
        result.streams = [s.stats for s in streams]
        result.latest = [None] * len(streams)
        result.times = [s.times for s in streams]
        result.queued = [s.depths for s in streams]
        batcher = _Batcher(streams, size, batch_timeout_ms / 1e3, stall_timeout, run)
        lock = threading.Lock()
        done = [0]

        def count() -> None:
            with lock:
                done[0] += 1
                result.frames = done[0]
                if progress is not None:
                    progress(done[0])

        readers = [
            threading.Thread(target=_guard_reader, args=(s, batcher, backend.metadata, max_frames), daemon=True)
            for s in streams
        ]
        threads = [
            threading.Thread(target=_infer, args=(run, batcher, backend, result, lock), daemon=True)
            for _ in range(workers)
        ]
        threads += [
            threading.Thread(
                target=_guard_writer,
                args=(run, s, batcher, backend, result, alpha, legend, on_frame, count),
                daemon=True,
            )
            for s in streams
        ]
        if on_start is not None:
            on_start(result)
        previous = _catch_signals(run)
        start = time.perf_counter()
        result.started = start
        for s in streams:
            s.started = start
        for t in readers + threads:
            t.start()
        try:
            while alive := [t for t in threads if t.is_alive()]:
                alive[0].join(timeout=0.01 if show else 0.05)  # an ended thread's join would return at once
                if show:
                    _show(run, result)
        except KeyboardInterrupt:
            run.abort("interrupted")
        for t in threads:
            t.join()
        result.seconds = time.perf_counter() - start
    finally:
        run.stop.set()  # whatever happened, no worker goes on writing while the outputs are finalised
        for t in threads:
            if t.ident is not None:
                t.join()
        _restore_signals(previous)
        deadline = time.monotonic() + READER_GRACE
        for t in readers:
            if t.ident is not None:  # a reader stuck in a read() is left behind: it is a daemon
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        for k, src in enumerate(opened):
            if k >= len(readers) or not readers[k].is_alive():
                src.release()
        if show:
            cv2.destroyAllWindows()
        for s in streams:
            _finish_writer(s)
    if run.error is not None:
        raise run.error
    for s in streams:
        s.end(run.reason or "end")
        if s.error is not None:
            result.errors[s.index] = s.error
        _summarise(s)
    result.ended_by = run.reason or "end"
    result.peak_rss_mb = peak_rss_mb()
    result.fps = result.frames / result.seconds if result.seconds > 0 else 0.0
    return result


def _refuse_overwriting_inputs(sources: Sequence[str | VideoSource], outs: Sequence[str | Path | None]) -> None:
    """An output that is one of the input files would destroy it: refuse before anything is opened."""
    inputs = []
    for source in sources:
        path = getattr(source, "path", None) if isinstance(source, VideoSource) else Path(str(source))
        if path is not None and Path(path).is_file():
            inputs.append(Path(path).resolve())
    seen: set[Path] = set()
    for out in outs:
        if out is None:
            continue
        target = Path(out).resolve()
        if target in inputs:
            raise UserError("the output would overwrite an input video; choose another --out", str(out))
        if target in seen:
            raise UserError("two streams would write the same output", str(out))
        seen.add(target)


def _finish_writer(stream: _Stream) -> None:
    if stream.writer is not None:
        path = stream.writer.finish()
        stream.stats.output = str(path) if path is not None else None


def _summarise(stream: _Stream) -> None:
    stats = stream.stats
    stats.fps = stats.frames / stats.seconds if stats.seconds > 0 else 0.0
    stats.latency_ms = latency_summary(stream.times)


def _catch_signals(run: _Run) -> dict[int, Any]:
    """On the main thread: SIGTERM (and SIGINT) stop the run like Ctrl-C, so that every MP4 is finalised.

    A second signal raises KeyboardInterrupt (a user pressing Ctrl-C twice wants out now).
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: FrameType | None) -> None:
        run.signals += 1
        if run.signals > 1:
            raise KeyboardInterrupt
        run.abort("terminated" if signum == signal.SIGTERM else "interrupted")

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _show(run: _Run, result: RunStats) -> None:
    """Main thread: show the newest overlay of each stream; `q` or Esc stops the run."""
    for i, frame in enumerate(result.latest):
        if frame is not None:
            cv2.imshow(WINDOW if len(result.latest) == 1 else f"{WINDOW} {i}: {result.streams[i].source}", frame)
    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
        run.abort("window closed")


def _block_signals() -> None:
    """Workers block SIGINT/SIGTERM so that they reach the main thread only: delivered to a worker they
    interrupt the encoder's write() (EINTR) and a frame is lost."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _guard_reader(stream: _Stream, batcher: _Batcher, metadata: Any, max_frames: int | None) -> None:
    """Reader thread: a failure ends this stream only (its frames read so far are still processed)."""
    _block_signals()
    reason = "end"
    try:
        reason = _read(stream, batcher, metadata, max_frames)
    except BaseException as exc:
        stream.fail(exc)
        reason = "error"
    finally:
        batcher.close(stream, reason)


def _read(stream: _Stream, batcher: _Batcher, metadata: Any, max_frames: int | None) -> str:
    height, width = stream.src.size
    stats = stream.stats
    while not stream.closed and not batcher.run.stop.is_set():
        if max_frames is not None and stats.read >= max_frames:
            return "max-frames"
        started = time.perf_counter()
        stream.reading_since = started
        frame = stream.src.read()
        stream.reading_since = None
        if stream.closed:  # evicted while blocked in read()
            return stats.ended_by
        if frame is None:
            return "source lost" if stream.src.live else "end"
        frame = to_bgr(frame)
        if frame.shape[:2] != (height, width):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
            stats.resized += 1
        decoded = time.perf_counter()
        batch, infos = preprocess(frame, metadata)
        item = _Item(stream=stream.index, index=stats.read, frame=frame, started=started, batch=batch, info=infos[0])
        stats.read += 1
        stream.times["read"].append(decoded - started)
        stream.times["preprocess"].append(time.perf_counter() - decoded)
        if not batcher.put(stream, item):
            break
    return stats.ended_by if stream.closed else batcher.run.reason or "stopped"


def _infer(run: _Run, batcher: _Batcher, backend: Backend, result: RunStats, lock: threading.Lock) -> None:
    """Inference thread: batches from the batcher -> logits -> each frame to its stream's writer.

    Several may run at once; `lock` guards the shared batch-size histogram.
    """
    _block_signals()
    streams = batcher.streams
    try:
        while (work := batcher.next_batch()) is not None:
            items, ended = work
            if items:
                started = time.perf_counter()
                images = items[0].batch if len(items) == 1 else np.concatenate([i.batch for i in items])
                logits = backend.infer(images)
                elapsed = time.perf_counter() - started
                with lock:
                    result.batch_sizes[len(items)] = result.batch_sizes.get(len(items), 0) + 1
                for k, item in enumerate(items):
                    item.waited, item.inferred = started - item.ready, elapsed
                    item.logits = logits[k : k + 1]
                    item.batch = item.batch[:0]  # the input is no longer needed
                    _deliver(run, streams[item.stream], item)
            for stream in ended:
                _deliver(run, stream, _End(stream.assigned))
    except BaseException as exc:  # re-raised by run_streams on the caller's thread
        run.abort("error", exc)


def _deliver(run: _Run, stream: _Stream, item: _Item | _End) -> None:
    """Blocking put into the stream's writer queue; gives up when the run stops or the writer is gone."""
    while not run.stop.is_set() and not stream.failed:
        try:
            stream.outbox.put(item, timeout=0.05)
            return
        except queue.Full:
            pass


def _guard_writer(
    run: _Run,
    stream: _Stream,
    batcher: _Batcher,
    backend: Backend,
    result: RunStats,
    alpha: float,
    legend: bool,
    on_frame: StreamFrameCallback | None,
    count: Callable[[], None],
) -> None:
    """Writer thread: a failure (callback, disk) ends this stream only; its MP4 is finalised at once."""
    _block_signals()
    try:
        _write(run, stream, backend, result, alpha, legend, on_frame, count)
    except BaseException as exc:
        stream.fail(exc)
        stream.failed = True
        batcher.close(stream, "error", drop=True)
    finally:
        stream.end(run.reason or "end")
        stream.stats.seconds = time.perf_counter() - stream.started
        _finish_writer(stream)


def _write(
    run: _Run,
    stream: _Stream,
    backend: Backend,
    result: RunStats,
    alpha: float,
    legend: bool,
    on_frame: StreamFrameCallback | None,
    count: Callable[[], None],
) -> None:
    meta = backend.metadata
    lut = palette_lut(meta.palette)
    times = stream.times
    early: dict[int, _Item] = {}  # frames that came before their turn (from another inference thread)
    written, total = 0, None
    while not run.stop.is_set() and written != total:
        if written not in early:
            try:
                got = stream.outbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(got, _End):
                total = got.total
            else:
                early[got.seq] = got
            continue
        item = early.pop(written)
        written += 1
        assert item.logits is not None
        times["wait"].append(item.waited)
        times["infer"].append(item.inferred)
        started = time.perf_counter()
        mask = postprocess(item.logits, [item.info])[0]
        blended = overlay(item.frame, colorize(mask, lut), alpha)
        if legend:
            blended = draw_legend(blended, mask, meta.classes, meta.palette)
        encoded = time.perf_counter()
        if stream.writer is not None:
            stream.writer.write(blended)
        if on_frame is not None:
            on_frame(stream.index, item.index, item.frame, mask, blended)
        result.latest[stream.index] = blended
        done = time.perf_counter()
        times["postprocess"].append(encoded - started)
        times["write"].append(done - encoded)
        times["end_to_end"].append(done - item.started)
        stream.stats.frames += 1
        count()
