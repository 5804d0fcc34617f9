"""The pipeline's threads after the readers (`runtime.stream.sources`): inference workers (batches from the muxer
-> the backend -> masks) and a writer per source (frames back in order, results, overlay, recording, callbacks)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from runtime.backends import Backend
from runtime.postprocess import colorize, draw_legend, overlay, palette_lut, postprocess
from runtime.signals import block_in_this_thread
from runtime.stream.mux import Muxer
from runtime.stream.state import End, Frame, Run, Stream
from runtime.stream.stats import RunStats

StreamFrameCallback = Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], None]


def inference(run: Run, muxer: Muxer, backend: Backend, result: RunStats, lock: threading.Lock) -> None:
    """Inference thread: batches from the muxer -> outputs -> each frame to its stream's writer.

    Several may run at once; `lock` guards the shared batch-size histogram.
    """
    block_in_this_thread()
    try:
        while (work := muxer.next_batch()) is not None:
            items, ended = work
            if items:
                started = time.perf_counter()
                images = items[0].batch if len(items) == 1 else np.concatenate([i.batch for i in items])
                outputs = backend.infer(images)
                elapsed = time.perf_counter() - started
                with lock:
                    result.batch_sizes[len(items)] = result.batch_sizes.get(len(items), 0) + 1
                    result.last_progress = time.monotonic()
                for k, item in enumerate(items):
                    item.waited, item.inferred = started - item.ready, elapsed
                    taking = time.perf_counter()
                    take(item, outputs[k : k + 1])
                    item.taken = time.perf_counter() - taking
                    item.batch = item.batch[:0]  # the input is no longer needed
                    _deliver(run, item.stream, item)
                del outputs  # back to the backend before its next call
            for stream in ended:
                _deliver(run, stream, End(stream.assigned))
    except BaseException as exc:  # re-raised by run_streams on the caller's thread
        run.abort("error", exc)


def take(item: Frame, output: np.ndarray) -> None:
    """The frame's part of its batch's output, in memory of its own: its `mask` (a stream without results) or a
    copy of its scores (`output`: smoothing, drift and records read them). ONNX Runtime hands its outputs over
    in its own arena; outputs held there while the writers catch up raised the arena's resident high-water mark,
    a little at a time, for as long as the run lasted (DESIGN.md, "Memory that does not creep")."""
    if item.stream.results is not None:
        item.output = output.copy()
        return
    mask = postprocess(output, [item.info])[0]
    item.mask = mask.copy() if np.shares_memory(mask, output) else mask  # a mask model's own, uncropped


def _deliver(run: Run, stream: Stream, item: Frame | End) -> None:
    """Blocking put into the stream's writer queue; gives up when the run stops or the writer is gone."""
    while not run.stop.is_set() and not stream.writer_done.is_set():
        try:
            stream.outbox.put(item, timeout=0.05)
            return
        except queue.Full:
            pass


def writer(
    run: Run,
    stream: Stream,
    muxer: Muxer,
    backend: Backend,
    result: RunStats,
    alpha: float,
    legend: bool,
    on_frame: StreamFrameCallback | None,
    count: Callable[[], None],
) -> None:
    """Writer thread: a failure (callback, disk) ends this stream only; its recording is finalised at once."""
    block_in_this_thread()
    try:
        _write(run, stream, backend, result, alpha, legend, on_frame, count)
    except BaseException as exc:
        stream.fail(exc)
        muxer.close(stream, "error", drop=True)
    finally:
        stream.writer_done.set()
        stream.end(run.reason or "end")
        stream.stats.seconds = time.perf_counter() - stream.started
        finish_recording(stream)


def _write(
    run: Run,
    stream: Stream,
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
    early: dict[int, Frame] = {}  # frames that came before their turn (from another inference thread)
    written, total = 0, None
    while not run.stop.is_set() and written != total:
        if written not in early:
            try:
                got = stream.outbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(got, End):
                total = got.total
            else:
                early[got.seq] = got
            continue
        item = early.pop(written)
        written += 1
        times["wait"].append(item.waited)
        times["infer"].append(item.inferred)
        started = time.perf_counter()
        results = stream.results  # smoothing, shares, drift, records: runtime.stream.results
        mask = results.mask(item, item.connection) if results is not None else item.mask
        assert mask is not None
        blended = overlay(item.frame, colorize(mask, lut), alpha)
        if legend:
            blended = draw_legend(blended, mask, meta.classes, meta.palette)
        encoded = time.perf_counter()
        if stream.recording is not None:
            stream.recording.write(blended, mask, item.index, item.connection)
        if on_frame is not None:
            on_frame(stream.index, item.index, item.frame, mask, blended)
        result.latest[stream.index] = blended
        done = time.perf_counter()
        times["postprocess"].append(encoded - started + item.taken)
        times["write"].append(done - encoded)
        times["end_to_end"].append(done - item.started)
        stream.stats.frames += 1
        count()


def finish_recording(stream: Stream) -> None:
    """Finalise the stream's recording (idempotent); one that cannot be finalised fails the stream."""
    if stream.recording is not None:
        try:
            stream.recording.close()
        except Exception as exc:
            stream.fail(exc)
