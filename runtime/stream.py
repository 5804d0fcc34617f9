"""Video-stream segmentation: reader -> inference -> writer threads joined by bounded queues.

The reader decodes, adapts (grayscale/BGRA to BGR, a frame of another size to the stream's size) and
pre-processes; the inference thread only runs the backend; the writer post-processes, blends, encodes and
hands the overlay to the main thread for `--show` (GUI toolkits want their windows on the main thread).
Decode and encode thus overlap inference. From a file every frame is kept (blocking puts); from a live
source the oldest waiting frame is dropped when inference lags. Ctrl-C, a lost source or an error always
leave a finalised video.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.backend import Backend
from runtime.errors import UserError
from runtime.postprocess import colorize, draw_legend, overlay, palette_lut, postprocess
from runtime.preprocess import FrameInfo, preprocess, to_bgr
from runtime.video import VideoSource, VideoWriter

STAGES = ("read", "preprocess", "infer", "postprocess", "write", "end_to_end")
WINDOW = "cfnet stream"
READER_GRACE = 2.0  # seconds to wait, after a stop, for a reader blocked in a source's read()
FrameCallback = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]
ProgressCallback = Callable[[int], None]


@dataclass
class StreamStats:
    """What a stream run did. `latency_ms[stage]` holds `median` and `p90` over the processed frames."""

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
    ended_by: str = "end"
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Item:
    index: int
    frame: np.ndarray
    started: float
    batch: np.ndarray | None = None
    infos: list[FrameInfo] | None = None
    logits: np.ndarray | None = None


_END = None  # queue sentinel: no more items


class _Run:
    """Shared state of one stream run: the stop flag, the first reason to end, stage timings, errors.

    `finish(reason)` records why the source ended; the queued frames are still processed. `abort(reason)`
    (Ctrl-C, a closed window, an error) sets `stop`: every thread leaves at once.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reason: str | None = None
        self.errors: list[BaseException] = []
        self.times: dict[str, list[float]] = {s: [] for s in STAGES}
        self.lock = threading.Lock()
        self.latest: np.ndarray | None = None  # the newest overlay, for the window on the main thread

    def finish(self, reason: str) -> None:
        with self.lock:
            self.reason = self.reason or reason

    def abort(self, reason: str) -> None:
        self.finish(reason)
        self.stop.set()

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(exc)
        self.abort("error")

    def put(self, q: queue.Queue[_Item | None], item: _Item | None) -> bool:
        """Blocking put that gives up when the run is stopping (a stopped consumer would never take it)."""
        while True:
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                if self.stop.is_set():
                    return False

    def get(self, q: queue.Queue[_Item | None]) -> _Item | None:
        """Blocking get; None at the end of the stream or when the run is stopping."""
        while True:
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                if self.stop.is_set():
                    return _END


def gui_available() -> bool:
    """Whether this OpenCV build can open a window (`opencv-python-headless` cannot)."""
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        cv2.destroyWindow(WINDOW)
    except cv2.error:
        return False
    return True


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
) -> StreamStats:
    """Segment every frame of `source` (a path, a camera index as digits, a URL, or an open `VideoSource`,
    which is released at the end).

    `out`: MP4 of the overlays (the source's size and FPS). `on_frame(index, frame, mask, overlay)` is called
    in order for each processed frame (index = position in the source, so drops show as gaps); `progress(done)`
    after each one. `live` overrides whether the source drops frames under lag (default: cameras and URLs).
    Returns the run's `StreamStats`; Ctrl-C ends the run early with `ended_by="interrupted"`.
    """
    if show and not gui_available():
        raise UserError(
            "--show needs OpenCV with GUI support", "pip install opencv-python instead of the headless build"
        )
    src = source if isinstance(source, VideoSource) else VideoSource(str(source))
    is_live = src.live if live is None else live
    writer: VideoWriter | None = None
    threads: list[threading.Thread] = []
    try:
        writer = VideoWriter(out, src.fps, src.size) if out is not None else None
        stats = StreamStats(
            source=src.name, output=None, backend=backend.name, live=is_live, size=src.size, input_fps=src.fps
        )
        run = _Run()
        inbox: queue.Queue[_Item | None] = queue.Queue(maxsize=max(1, queue_size if not is_live else 2))
        outbox: queue.Queue[_Item | None] = queue.Queue(maxsize=max(1, queue_size))
        threads = [
            threading.Thread(target=_guard, args=(run, _read, run, src, backend, inbox, stats, max_frames, is_live)),
            threading.Thread(target=_guard, args=(run, _infer, run, backend, inbox, outbox)),
            threading.Thread(
                target=_guard,
                args=(run, _write, run, backend, outbox, writer, stats, alpha, legend, show, on_frame, progress),
            ),
        ]
        start = time.perf_counter()
        for t in threads:
            t.daemon = True
            t.start()
        reader, *workers = threads  # the workers end after the reader's end marker, or on a stop
        try:
            while any(t.is_alive() for t in workers):
                workers[-1].join(timeout=0.01 if show else 0.1)
                if show:
                    _show(run)
        except KeyboardInterrupt:
            run.abort("interrupted")
        for t in workers:
            t.join()
        reader.join(timeout=READER_GRACE)  # a stalled camera can block in read(): leave it, it is a daemon
        stats.seconds = time.perf_counter() - start
    finally:
        if not threads or not threads[0].is_alive():
            src.release()
        if show:
            cv2.destroyAllWindows()
        if writer is not None:
            path = writer.finish()
            if path is not None:
                stats.output = str(path)
    if run.errors:
        raise run.errors[0]
    stats.ended_by = run.reason or "end"
    stats.fps = stats.frames / stats.seconds if stats.seconds > 0 else 0.0
    stats.latency_ms = {
        stage: {"median": float(np.median(v)) * 1e3, "p90": float(np.percentile(v, 90)) * 1e3}
        for stage, v in run.times.items()
        if v
    }
    return stats


def _show(run: _Run) -> None:
    """Main thread: show the newest overlay; `q` or Esc stops the run."""
    frame, run.latest = run.latest, None
    if frame is not None:
        cv2.imshow(WINDOW, frame)
    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
        run.abort("window closed")


def _guard(run: _Run, target: Callable[..., None], *args: Any) -> None:
    """Thread body: run `target`, turning any exception into a stop of the whole run.

    SIGINT is blocked in the workers so that Ctrl-C reaches the main thread only: delivered to a worker it
    interrupts the encoder's write() (EINTR) and a frame is lost.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        target(*args)
    except BaseException as exc:  # re-raised by run_stream on the caller's thread
        run.fail(exc)


def _read(
    run: _Run,
    src: VideoSource,
    backend: Backend,
    inbox: queue.Queue[_Item | None],
    stats: StreamStats,
    max_frames: int | None,
    live: bool,
) -> None:
    height, width = src.size
    try:
        while not run.stop.is_set():
            if max_frames is not None and stats.read >= max_frames:
                run.finish("max-frames")
                break
            started = time.perf_counter()
            frame = src.read()
            if frame is None:
                run.finish("source lost" if src.live else "end")
                break
            frame = to_bgr(frame)
            if frame.shape[:2] != (height, width):
                frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
                stats.resized += 1
            item = _Item(index=stats.read, frame=frame, started=started)
            stats.read += 1
            decoded = time.perf_counter()
            item.batch, item.infos = preprocess(frame, backend.metadata)
            run.times["read"].append(decoded - started)
            run.times["preprocess"].append(time.perf_counter() - decoded)
            if live:
                _put_dropping_oldest(inbox, item, stats)
            elif not run.put(inbox, item):
                break
    finally:
        run.put(inbox, _END)


def _put_dropping_oldest(inbox: queue.Queue[_Item | None], item: _Item, stats: StreamStats) -> None:
    while True:
        try:
            inbox.put_nowait(item)
            return
        except queue.Full:
            try:
                inbox.get_nowait()
                stats.dropped += 1
            except queue.Empty:
                pass


def _infer(run: _Run, backend: Backend, inbox: queue.Queue[_Item | None], outbox: queue.Queue[_Item | None]) -> None:
    try:
        while (item := run.get(inbox)) is not None and item.batch is not None and not run.stop.is_set():
            started = time.perf_counter()
            item.logits = backend.infer(item.batch)
            run.times["infer"].append(time.perf_counter() - started)
            item.batch = None
            if not run.put(outbox, item):
                break
    finally:
        run.put(outbox, _END)


def _write(
    run: _Run,
    backend: Backend,
    outbox: queue.Queue[_Item | None],
    writer: VideoWriter | None,
    stats: StreamStats,
    alpha: float,
    legend: bool,
    show: bool,
    on_frame: FrameCallback | None,
    progress: ProgressCallback | None,
) -> None:
    meta = backend.metadata
    lut = palette_lut(meta.palette)
    while (item := run.get(outbox)) is not None and not run.stop.is_set():
        started = time.perf_counter()
        if item.logits is None or item.infos is None:
            raise RuntimeError("stream item without logits")
        mask = postprocess(item.logits, item.infos)[0]
        blended = overlay(item.frame, colorize(mask, lut), alpha)
        if legend:
            blended = draw_legend(blended, mask, meta.classes, meta.palette)
        encoded = time.perf_counter()
        if writer is not None:
            writer.write(blended)
        if on_frame is not None:
            on_frame(item.index, item.frame, mask, blended)
        if show:
            run.latest = blended
        done = time.perf_counter()
        run.times["postprocess"].append(encoded - started)
        run.times["write"].append(done - encoded)
        run.times["end_to_end"].append(done - item.started)
        stats.frames += 1
        if progress is not None:
            progress(stats.frames)
