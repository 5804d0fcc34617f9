"""A stream's reader thread: it opens its source, reads, adapts and pre-processes frames for the muxer, and, for
a live source under a `Reconnect` policy, reopens the source whenever it fails, ends or stalls.

Reopening waits between attempts (`Reconnect.delay`: doubling from `min_s` up to `max_s`, jittered so that
cameras that dropped together do not all come back in the same instant); meanwhile the stream's state is
"reconnecting", its `down_seconds` grow, and the other streams are untouched. A source that cannot be opened at
the start is tried the same way (a camera that boots after the box). A file still ends at its end (or, with
`loop`, starts again from its first frame), and one that ends before the frames its MP4 index declares ends as
"truncated". A read blocked longer than the stall timeout is found by the run's supervisor (`supervise`), on a
clock whatever the other streams do: under a policy the stream goes "reconnecting" at once and its reader
reopens the source as soon as the blocked call returns (network streams are opened with FFmpeg's own timeouts
set from the stall timeout, so it does); without one the stream ends as "stalled".
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2

import runtime.log as log
from runtime.preprocess import preprocess, to_bgr
from runtime.signals import block_in_this_thread
from runtime.stream.mux import Muxer
from runtime.stream.state import Frame, Stream
from runtime.video import VideoSource

_transitions = threading.Lock()  # a stream goes down or up from its reader and from the supervisor


@dataclass(frozen=True)
class Reconnect:
    """Reopen live sources that fail, end or stall: attempt k waits a random time between `min_s` and
    `min(max_s, min_s * 2**(k+1))` seconds."""

    min_s: float = 1.0
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.min_s * 2 ** min(attempt + 1, 32))
        return random.uniform(self.min_s, max(self.min_s, ceiling))


def reader(
    stream: Stream, muxer: Muxer, metadata: Any, max_frames: int | None, policy: Reconnect | None, loop: bool
) -> None:
    """Reader thread: a failure ends this stream only (its frames read so far are still processed)."""
    block_in_this_thread()
    reason = "end"
    try:
        reason = _keep_reading(stream, muxer, metadata, max_frames, policy, loop)
    except BaseException as exc:
        stream.fail(exc)
        reason = "error"
    finally:
        muxer.close(stream, reason)
        if stream.src is not None:
            stream.src.release()


def _keep_reading(
    stream: Stream, muxer: Muxer, metadata: Any, max_frames: int | None, policy: Reconnect | None, loop: bool
) -> str:
    run = muxer.run
    while True:
        if stream.src is None and not _connect(stream, muxer, policy):
            return stream.stats.ended_by if stream.closed else run.reason or "stopped"
        reopen = policy is not None and stream.live and stream.opener is not None
        try:
            reason = _read(stream, muxer, metadata, max_frames)
        except Exception as exc:
            if not reopen or stream.closed or run.stop.is_set():
                raise
            reason = f"read failed: {exc}"
        src = stream.src
        assert src is not None
        if reason == "end" and loop and stream.opener is not None:  # a file again from its first frame
            src.release()
            stream.src = None
            stream.src = stream.opener()
            continue
        if not reopen or reason == "max-frames" or stream.closed or run.stop.is_set():
            return reason
        went_down(stream, "stream lost" if reason == "source lost" else reason)
        src.release()
        stream.src = None


def _connect(stream: Stream, muxer: Muxer, policy: Reconnect | None) -> bool:
    """Open the stream's source, again and again under `policy`; False when the stream or the run ended first."""
    assert stream.opener is not None
    run, attempt = muxer.run, 0
    while not stream.closed and not run.stop.is_set():
        try:  # not watched for stalls: a network stream's opening gives up after the stall timeout itself
            src = stream.opener()
        except Exception as exc:
            if policy is None or not stream.live:
                raise
            went_down(stream, str(exc))
        else:
            if stream.closed or run.stop.is_set():
                src.release()
                return False
            came_up(stream, src)
            return True
        deadline = time.monotonic() + policy.delay(attempt)
        attempt += 1
        while not stream.closed and not run.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            stream.wake.wait(min(left, 0.1))
    return False


def went_down(stream: Stream, reason: str) -> None:
    """The stream's source is gone: state "reconnecting" (logged once per outage)."""
    with _transitions:
        if stream.closed:
            return
        stream.stats.state = "reconnecting"
        if stream.down_since is not None:
            return
        stream.down_since = time.monotonic()
    log.warning(f"{stream.name}: {reason}; reconnecting", stream=stream.name, event="down", reason=reason)


def came_up(stream: Stream, src: VideoSource) -> None:
    """The stream's source is open (again): state "running"; an outage ends (counted as a reconnect)."""
    stats = stream.stats
    with _transitions:
        stream.src, stream.stalled = src, False
        stream.connection += 1
        if stats.size == (0, 0):  # opened for the first time: the stream takes its size and rate
            stats.size, stats.input_fps = src.size, src.fps
            if stream.recording is not None:
                stream.recording.fps = src.fps
        down = None
        if stream.down_since is not None:
            down = time.monotonic() - stream.down_since
            stream.down_before += down
            stream.down_since = None
            stats.down_seconds = stream.down_before
            stats.reconnects += 1
        if not stream.closed:
            stats.state = "running"
    if down is not None:
        log.info(
            f"{stream.name}: reconnected after {down:.1f} s down",
            stream=stream.name,
            event="reconnected",
            down_seconds=round(down, 3),
        )


def supervise(streams: list[Stream], muxer: Muxer, stall_timeout: float, policy: Reconnect | None) -> None:
    """The run's clock (its main thread, every few tens of ms): a stream blocked in a read longer than
    `stall_timeout` goes "reconnecting" under `policy` (its reader reopens the source when the call
    returns), else ends as "stalled"; a stream that is down has its `down_seconds` brought up to date."""
    now, clock = time.perf_counter(), time.monotonic()
    for stream in streams:
        if stream.closed:
            continue
        since = stream.reading_since
        if since is not None and now - since > stall_timeout and not stream.stalled:
            if policy is not None and stream.live and stream.opener is not None:
                stream.stalled = True
                went_down(stream, f"stalled: no frame for {stall_timeout:g} s")
            else:
                muxer.close(stream, "stalled")
        down_since = stream.down_since
        if down_since is not None:
            stream.stats.down_seconds = stream.down_before + clock - down_since


def _read(stream: Stream, muxer: Muxer, metadata: Any, max_frames: int | None) -> str:
    """Read the open source until it ends, fails or stalls, or the stream or the run ends; returns why."""
    src, stats = stream.src, stream.stats
    assert src is not None
    height, width = stats.size
    passed = 0  # frames read from this opening of the source
    while not stream.closed and not muxer.run.stop.is_set():
        if max_frames is not None and stats.read >= max_frames:
            return "max-frames"
        started = time.perf_counter()
        stream.reading_since = started
        frame = src.read()
        stream.reading_since = None
        if stream.closed:  # ended (stalled, removed) while blocked in read()
            return stats.ended_by
        if stream.stalled:
            return "stalled"
        if frame is None:
            if src.live:
                return "source lost"
            if src.declared is not None and passed < src.declared:
                log.warning(
                    f"{stream.name}: truncated: {passed} of the {src.declared} frames its index declares ({src.name})",
                    stream=stream.name,
                    event="truncated",
                )
                return "truncated"
            return "end"
        passed += 1
        frame = to_bgr(frame)
        if frame.shape[:2] != (height, width):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
            stats.resized += 1
        decoded = time.perf_counter()
        batch, infos = preprocess(frame, metadata)
        item = Frame(stream, stats.read, frame, started, batch, infos[0], connection=stream.connection)
        stats.read += 1
        stream.times["read"].append(decoded - started)
        stream.times["preprocess"].append(time.perf_counter() - decoded)
        if not muxer.put(stream, item):
            break
    return stats.ended_by if stream.closed else muxer.run.reason or "stopped"
