"""`run_stream` / `run_streams`: open the sources and outputs, start the threads, supervise (stalls, outages and
SIGHUP's reload on the main thread's clock), shut down."""

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
from runtime.stream.control import StreamControl, read_sources
from runtime.stream.display import require_gui
from runtime.stream.display import show as show_window
from runtime.stream.mux import Muxer
from runtime.stream.pipeline import Pipeline, Settings
from runtime.stream.recording import Retention
from runtime.stream.results import RunResults
from runtime.stream.sizing import check_batch, check_workers, default_batch, default_workers
from runtime.stream.sources import Reconnect
from runtime.stream.stages import StreamFrameCallback
from runtime.stream.state import Run, Stream
from runtime.stream.stats import RunStats, StreamStats, latency_summary, peak_rss_mb
from runtime.video import VideoSource, is_live, stream_names

SIGHUP = getattr(signal, "SIGHUP", None)  # absent on Windows

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
    names: Sequence[str] | None = None,
    masks_dir: str | Path | None = None,
    mask_outs: Sequence[str | Path | None] | None = None,
    segment_seconds: float | None = None,
    retain_bytes: float | None = None,
    retain_seconds: float | None = None,
    reconnect: Reconnect | None = None,
    loop: bool = False,
    sources_file: str | Path | None = None,
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

    `out_dir`: one MP4 per stream, `OUT/NAME.mp4`, named by `names` (default: `runtime.video.stream_names`), or
    `outs`: a path or None per source; `masks_dir`: each stream's masks as PNGs in `MASKS/NAME/` (or `mask_outs`:
    a folder or None per source). `segment_seconds`: rolling segments `OUT/NAME/NAME-<UTC start>.mp4` instead
    (a new one after each reconnect), the oldest deleted beyond `retain_bytes` or `retain_seconds`; a full disk
    pauses a stream's recording until there is room (`runtime.stream.recording`). `reconnect`: reopen live
    sources that fail, end or stall (`runtime.stream.sources`; None: they end their stream). `loop`: files
    start again at their end. `sources_file`: more sources, one a line (`runtime.stream.control`), re-read on
    SIGHUP; the run then lasts until it is stopped (Ctrl-C, SIGTERM), even with no stream left.
    `RunStats.control` adds and removes streams while the run goes on.

    `batch`: frames per inference (default: `default_batch`: the number of sources capped by what the model
    takes, 1 on a CPU); `batch_timeout_ms`: the longest the oldest frame of an unfilled batch waits;
    `stall_timeout`: seconds a source may block in a read or an opening before its stream is ended
    (`ended_by="stalled"`) or, under `reconnect`, reopened; `infer_workers`: inference calls in flight at once
    (default: `default_workers`; open an ONNX Runtime backend with `threads=worker_threads(workers)` so that
    they share the cores). `on_frame(stream, index, frame, mask, overlay)` is called in order per stream;
    `progress(done)` with the frames done over all streams; `on_start(stats)` hands an observer the live
    `RunStats` before the first frame. A stream that fails ends alone (`ended_by="error"`, the exception in
    `RunStats.errors`); an inference error stops the run and is raised once every output is finalised.

    Results as data (`runtime.stream.results`): `results` (a `runtime.results.stage.ResultsConfig`: regions,
    `--emit-every`, smoothing, drift alert) applies to every stream; `emit` writes one JSON line per frame and
    stream (`FILE.jsonl`, `DIR/`, `-`); `on_result(record)` gets the same dicts, in order per stream, from the
    stream's writer thread. Each stream's newest shares and drift figures are in its `StreamStats`; smoothing
    and the drift window start afresh when a live source reconnects.
    """
    listed = read_sources(Path(sources_file)) if sources_file is not None else []
    if not sources and sources_file is None:  # a sources file may list none yet: SIGHUP or the API add them
        raise UserError("no source to stream", "give at least one video, camera or URL")
    if show:
        require_gui()
    count = max(1, len(sources) + len(listed))
    size = batch if batch is not None else default_batch(backend, count)
    if size < 1:
        raise UserError(f"batch must be >= 1, got {size}", "--batch")
    check_batch(backend, size)
    workers = infer_workers if infer_workers is not None else default_workers(backend, count)
    check_workers(backend, workers)
    specs = [s.name if isinstance(s, VideoSource) else str(s) for s in sources]
    names = list(names) if names is not None else stream_names(specs)
    clash = next((line for line in listed if line.name in names), None)
    if clash is not None:
        raise UserError(f"duplicate stream name '{clash.name}'", f"{sources_file}:{clash.line}")
    roots = [Path(d) for d in (out_dir, masks_dir) if d is not None]
    retention = Retention(roots, retain_bytes, retain_seconds) if retain_bytes or retain_seconds else None
    settings = Settings(
        backend,
        alpha=alpha,
        legend=legend,
        on_frame=on_frame,
        max_frames=max_frames,
        queue_size=queue_size,
        live=live,
        stall_timeout=stall_timeout,
        reconnect=reconnect,
        loop=loop,
        out_dir=Path(out_dir) if out_dir is not None else None,
        masks_dir=Path(masks_dir) if masks_dir is not None else None,
        segment_seconds=segment_seconds,
        retention=retention,
    )
    outs = list(outs) if outs is not None else [settings.video_for(n) for n in names]
    mask_outs = list(mask_outs) if mask_outs is not None else [settings.masks_for(n) for n in names]
    if not len(outs) == len(mask_outs) == len(names) == len(sources):
        raise UserError(f"{len(outs)} outputs and {len(names)} names for {len(sources)} sources", "outs")
    _refuse_overwriting_inputs(sources, outs, folders=segment_seconds is not None)
    settings.results = RunResults(results, backend, emit=emit, on_result=on_result)  # checked before a source opens
    run = Run()
    muxer = Muxer([], size, batch_timeout_ms / 1e3, run, keep_open=sources_file is not None)
    result = RunStats(
        streams=[],
        backend=backend.name,
        batch=size,
        batch_timeout_ms=batch_timeout_ms,
        workers=workers,
        stall_timeout=stall_timeout,
    )
    lock, done = threading.Lock(), [0]

    def count_frame() -> None:
        with lock:
            done[0] += 1
            result.frames = done[0]
            if progress is not None:
                progress(done[0])

    pipeline = Pipeline(settings, result, run, muxer, count_frame)
    control = StreamControl(pipeline, Path(sources_file) if sources_file is not None else None)
    result.control = control
    reload = threading.Event()

    def on_signal(signum: int) -> None:
        """SIGTERM (and SIGINT) stop the run like Ctrl-C, so that every output is finalised; a second signal
        raises KeyboardInterrupt (a user pressing Ctrl-C twice wants out now). SIGHUP: reload the sources."""
        if signum == SIGHUP:
            reload.set()
            return
        run.signals += 1
        if run.signals > 1:
            raise KeyboardInterrupt
        run.abort("terminated" if signum == signal.SIGTERM else "interrupted")

    caught = [signal.SIGINT, signal.SIGTERM] + ([SIGHUP] if sources_file is not None and SIGHUP else [])
    signals = contextlib.ExitStack()
    added = 0
    try:
        for source, name, video, masks in zip(sources, names, outs, mask_outs, strict=True):
            pipeline.add(source, name, video=_path(video), masks=_path(masks))
            added += 1
        for line in listed:
            pipeline.add(line.source, line.name, origin="file")
        if retention is not None:
            retention.enforce()
        if on_start is not None:
            on_start(result)
        signals.enter_context(handling(caught, on_signal))
        pipeline.start(workers)
        try:
            while alive := pipeline.alive():
                alive[0].join(timeout=0.01 if show else 0.05)  # an ended thread's join would return at once
                pipeline.supervise()
                if reload.is_set():
                    reload.clear()
                    control.reload()
                if show:
                    show_window(run, result)
        except KeyboardInterrupt:
            run.abort("interrupted")
        for t in pipeline.alive():
            t.join()
        result.seconds = time.perf_counter() - (result.started or time.perf_counter())
    finally:
        run.stop.set()  # whatever happened, no worker goes on writing while the outputs are finalised
        for t in list(pipeline.workers):
            if t.ident is not None:
                t.join()
        signals.close()
        for source in sources[added:]:
            if isinstance(source, VideoSource):
                source.release()
        pipeline.finish(READER_GRACE)
        settings.results.close()
        if show:
            cv2.destroyAllWindows()
    if run.error is not None:
        raise run.error
    for s in pipeline.streams:
        s.end(run.reason or "end")
        if s.error is not None:
            result.errors[s.index] = s.error
        _summarise(s)
    result.ended_by = run.reason or "end"
    result.peak_rss_mb = peak_rss_mb()
    result.fps = result.frames / result.seconds if result.seconds > 0 else 0.0
    return result


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


def _refuse_overwriting_inputs(
    sources: Sequence[str | VideoSource], outs: Sequence[str | Path | None], folders: bool = False
) -> None:
    """An output that is one of the input files, or another output, would destroy it: refuse before anything
    is opened (`runtime.files.check_outputs`, the one check of every writing command). `folders`: the outputs
    are segment folders."""
    inputs = [
        getattr(s, "path", None) if isinstance(s, VideoSource) else None if is_live(str(s)) else str(s) for s in sources
    ]
    check_outputs([Output(out, folder=folders) if out is not None else None for out in outs], inputs)


def _summarise(stream: Stream) -> None:
    stats = stream.stats
    stats.fps = stats.frames / stats.seconds if stats.seconds > 0 else 0.0
    stats.latency_ms = latency_summary(stream.times)
