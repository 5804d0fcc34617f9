"""`run_stream` / `run_streams`: open the sources and outputs, start the threads, supervise, shut down."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.backends import Backend
from runtime.errors import UserError
from runtime.files import Output, check_outputs
from runtime.results.emit import JsonLines
from runtime.results.stage import ResultsConfig
from runtime.signals import handling
from runtime.stream.display import require_gui
from runtime.stream.display import show as show_window
from runtime.stream.mux import Muxer
from runtime.stream.results import RunResults
from runtime.stream.sizing import check_batch, check_workers, default_batch, default_workers
from runtime.stream.stages import StreamFrameCallback, finish_writer, inference, reader, writer
from runtime.stream.state import Run, Stream
from runtime.stream.stats import RunStats, StreamStats, latency_summary, peak_rss_mb
from runtime.video import VideoSource, VideoWriter, is_live, stream_names

READER_GRACE = 2.0  # seconds to wait, after the end, for a reader blocked in a source's read()
DEFAULT_BATCH_TIMEOUT_MS = 40.0  # one frame interval at 25 fps
DEFAULT_STALL_TIMEOUT_S = 10.0

FrameCallback = Callable[[int, np.ndarray, np.ndarray, np.ndarray], None]
ProgressCallback = Callable[[int], None]


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
    results: ResultsConfig | None = None,
    emit: str | Path | JsonLines | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> StreamStats:
    """Segment every frame of `source` (a path, a camera index as digits, a URL, or an open `VideoSource`,
    which is released at the end): `run_streams` with one source.

    `out`: MP4 of the overlays (the source's size and FPS). `on_frame(index, frame, mask, overlay)` is called
    in order for each processed frame (index = position in the source, so drops show as gaps); `progress(done)`
    after each one. `live` overrides whether the source drops frames under lag (default: cameras and URLs).
    Returns the stream's `StreamStats`; Ctrl-C or SIGTERM ends the run early with `ended_by="interrupted"`
    or `"terminated"`. An error of the stream is raised once its MP4 is finalised. `results`, `emit`,
    `on_result`: as `run_streams`.
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
        results=results,
        emit=emit,
        on_result=on_result,
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
    results: ResultsConfig | None = None,
    emit: str | Path | JsonLines | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
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

    Results as data (`runtime.stream.results`): `results` (a `runtime.results.stage.ResultsConfig`: regions,
    `--emit-every`, smoothing, drift alert) applies to every stream; `emit` writes one JSON line per frame and
    stream (`FILE.jsonl`, `DIR/`, `-`); `on_result(record)` gets the same dicts, in order per stream, from the
    stream's writer thread. Each stream's newest shares and drift figures are in its `StreamStats`.
    """
    if not sources:
        raise UserError("no source to stream", "give at least one video, camera or URL")
    if show:
        require_gui()
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
    run_results = RunResults(results, backend, emit=emit, on_result=on_result)  # checked before a source opens
    opened: list[VideoSource] = []
    streams: list[Stream] = []
    run = Run()

    def on_signal(signum: int) -> None:
        """SIGTERM (and SIGINT) stop the run like Ctrl-C, so that every MP4 is finalised; a second signal
        raises KeyboardInterrupt (a user pressing Ctrl-C twice wants out now)."""
        run.signals += 1
        if run.signals > 1:
            raise KeyboardInterrupt
        run.abort("terminated" if signum == signal.SIGTERM else "interrupted")

    signals = contextlib.ExitStack()
    result = RunStats(
        streams=[], backend=backend.name, batch=size, batch_timeout_ms=batch_timeout_ms, workers=workers
    )
    threads: list[threading.Thread] = []
    readers: list[threading.Thread] = []
    try:
        for source in sources:
            opened.append(source if isinstance(source, VideoSource) else VideoSource(str(source)))
        for i, (src, out) in enumerate(zip(opened, outs, strict=True)):
            is_live = src.live if live is None else live
            video = VideoWriter(out, src.fps, src.size) if out is not None else None
            stats = StreamStats(
                source=src.name, output=None, backend=backend.name, live=is_live, size=src.size, input_fps=src.fps
            )
            streams.append(Stream(i, src, is_live, video, stats, max(1, 2 if is_live else queue_size)))
        for stream, name in zip(streams, stream_names([s.name for s in opened]), strict=True):
            stream.results = run_results.for_stream(name, stream.src.name, stream.stats, stream.src.fps, stream.live)
        result.streams = [s.stats for s in streams]
        result.latest = [None] * len(streams)
        result.times = [s.times for s in streams]
        result.queued = [s.depths for s in streams]
        muxer = Muxer(streams, size, batch_timeout_ms / 1e3, stall_timeout, run)
        lock = threading.Lock()
        done = [0]

        def count() -> None:
            with lock:
                done[0] += 1
                result.frames = done[0]
                if progress is not None:
                    progress(done[0])

        readers = [
            threading.Thread(target=reader, args=(s, muxer, backend.metadata, max_frames), daemon=True)
            for s in streams
        ]
        threads = [
            threading.Thread(target=inference, args=(run, muxer, backend, result, lock), daemon=True)
            for _ in range(workers)
        ]
        threads += [
            threading.Thread(
                target=writer,
                args=(run, s, muxer, backend, result, alpha, legend, on_frame, count),
                daemon=True,
            )
            for s in streams
        ]
        if on_start is not None:
            on_start(result)
        signals.enter_context(handling([signal.SIGINT, signal.SIGTERM], on_signal))
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
                    show_window(run, result)
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
        signals.close()
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
            finish_writer(s)
        run_results.close()
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
    """An output that is one of the input files, or another output, would destroy it: refuse before anything
    is opened (`runtime.files.check_outputs`, the one check of every writing command)."""
    inputs = [
        getattr(s, "path", None) if isinstance(s, VideoSource) else None if is_live(str(s)) else str(s) for s in sources
    ]
    check_outputs([Output(out) if out is not None else None for out in outs], inputs)


def _summarise(stream: Stream) -> None:
    stats = stream.stats
    stats.fps = stats.frames / stats.seconds if stats.seconds > 0 else 0.0
    stats.latency_ms = latency_summary(stream.times)
