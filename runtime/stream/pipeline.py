"""A running pipeline whose streams come and go: `Pipeline.add` opens a stream's outputs, registers it with the
muxer and the run's `RunStats` and starts its reader and writer; `Pipeline.remove` ends one (its recording
finalised by its writer). The inference workers serve whichever streams the muxer holds."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.backends import Backend
from runtime.errors import UserError
from runtime.memory import Trimmer, long_run
from runtime.stream.mux import Muxer
from runtime.stream.recording import Recording, Retention
from runtime.stream.results import RunResults
from runtime.stream.sources import Reconnect, reader, supervise
from runtime.stream.stages import StreamFrameCallback, finish_recording, inference, writer
from runtime.stream.state import Run, Stream
from runtime.stream.stats import RunStats, StreamStats
from runtime.video import VideoSource, check_spec, is_live

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_name(name: str, where: str) -> str:
    """A stream name is a file name: letters, digits, `_`, `.`, `-`, not starting with `.`."""
    if not name or name.startswith(".") or not set(name) <= NAME_CHARS:
        raise UserError(f"bad stream name '{name}' (letters, digits, _ . - only, not starting with .)", where)
    return name


@dataclass
class Settings:
    """What every stream of a run shares."""

    backend: Backend
    alpha: float = 0.5
    legend: bool = False
    on_frame: StreamFrameCallback | None = None
    max_frames: int | None = None
    queue_size: int = 4
    live: bool | None = None  # overrides whether sources drop frames under lag
    stall_timeout: float = 10.0
    reconnect: Reconnect | None = None
    loop: bool = False
    out_dir: Path | None = None  # streams added by name record to OUT/NAME.mp4 (segments: OUT/NAME/)
    masks_dir: Path | None = None  # ... and their masks to MASKS/NAME/
    segment_seconds: float | None = None
    retention: Retention | None = None
    results: RunResults | None = None  # results as data: each stream's smoothing, shares, drift, records

    def video_for(self, name: str) -> Path | None:
        """Where a stream records by default: `OUT/NAME.mp4`, or its segments' folder `OUT/NAME`."""
        if self.out_dir is None:
            return None
        return self.out_dir / name if self.segment_seconds is not None else self.out_dir / f"{name}.mp4"

    def masks_for(self, name: str) -> Path | None:
        """Where a stream's masks go by default: `MASKS/NAME`."""
        return self.masks_dir / name if self.masks_dir is not None else None


class Pipeline:
    """The streams of a run, its muxer and threads. `add`/`remove` are thread-safe (the control API's server
    calls them) and may be called before or after `start`."""

    def __init__(self, settings: Settings, result: RunStats, run: Run, muxer: Muxer, count: Callable[[], None]) -> None:
        self.settings, self.result, self.run, self.muxer, self.count = settings, result, run, muxer, count
        self.streams: list[Stream] = []
        self.readers: dict[int, threading.Thread] = {}  # by stream index
        self.workers: list[threading.Thread] = []  # inference and writer threads: the run lasts while one lives
        self.lock = threading.Lock()
        self.started = False
        self.trimmer = Trimmer()

    def add(
        self,
        source: str | VideoSource,
        name: str,
        *,
        video: Path | None | bool = True,
        masks: Path | None | bool = True,
        origin: str = "args",
    ) -> Stream:
        """Add a stream named `name` (a path, camera index or URL, or an open source). `video`/`masks`: its
        output file or folder, None for none, True for the run's default by name. A file is opened at once (a
        bad one raises `UserError`); a live source under a reconnect policy is opened by its reader."""
        s = self.settings
        with self.lock:
            if any(t.name == name for t in self.running()):
                raise UserError(f"a stream named '{name}' is already running", name)
            src, spec = (source, source.name) if isinstance(source, VideoSource) else (None, check_spec(str(source)))
            live = src.live if src is not None else is_live(spec)
            opener = src.reopen if src is not None else functools.partial(VideoSource, spec, s.stall_timeout)
            if src is None and (s.reconnect is None or not live):
                src = opener()
            try:
                stream = self._stream(src, spec, name, live if s.live is None else s.live, video, masks, origin)
            except BaseException:
                if src is not None:
                    src.release()
                raise
            stream.opener = opener
            if s.results is not None:
                stream.results = s.results.for_stream(
                    name, spec, stream.stats, src.fps if src is not None else 0.0, stream.live
                )
            if not self.muxer.add(stream):
                if src is not None:
                    src.release()
                finish_recording(stream)
                raise UserError("the run is ending: no stream may join it", name)
            self.streams.append(stream)
            result = self.result
            result.latest.append(None)
            result.times.append(stream.times)
            result.queued.append(stream.depths)
            result.opened.append(stream.started)
            result.streams.append(stream.stats)
            if self.started:
                self._start(stream)
        return stream

    def _stream(
        self,
        src: VideoSource | None,
        spec: str,
        name: str,
        live: bool,
        video: Path | None | bool,
        masks: Path | None | bool,
        origin: str,
    ) -> Stream:
        s = self.settings
        stats = StreamStats(
            source=spec,
            output=None,
            backend=s.backend.name,
            live=live,
            size=src.size if src is not None else (0, 0),
            input_fps=src.fps if src is not None else 0.0,
            name=name,
        )
        if video is True:
            video = s.video_for(name)
        if masks is True:
            masks = s.masks_for(name)
        recording = None
        if video or masks:
            recording = Recording(
                stats,
                video=video or None,
                masks=masks or None,
                fps=src.fps if src is not None else 0.0,
                segment_seconds=s.segment_seconds,
                retention=s.retention,
            )
            if src is not None:
                recording.open(src.size)
        stream = Stream(
            len(self.result.streams),
            stats,
            max(1, 2 if live else s.queue_size),
            src=src,
            recording=recording,
            origin=origin,
        )
        stream.connection = 1 if src is not None else 0
        return stream

    def remove(self, name: str) -> Stream:
        """End the running stream `name` (`ended_by="removed"`); returns at once, its writer finalises it."""
        with self.lock:
            stream = next((t for t in self.running() if t.name == name), None)
            if stream is None:
                raise UserError("unknown stream", name)
            self.muxer.close(stream, "removed")
        return stream

    def running(self) -> list[Stream]:
        """The streams that have not ended."""
        return [t for t in self.streams if not t.closed]

    def start(self, workers: int) -> None:
        """Start `workers` inference threads and every stream's threads (the C heap set for a long run first:
        `runtime.memory.long_run`)."""
        s = self.settings
        long_run()
        with self.lock:
            self.result.started = start = time.perf_counter()
            for stream in self.streams:
                stream.started = start
            self.result.opened = [start] * len(self.streams)
            lock = threading.Lock()
            for _ in range(workers):
                thread = threading.Thread(
                    target=inference, args=(self.run, self.muxer, s.backend, self.result, lock), daemon=True
                )
                self.workers.append(thread)
                thread.start()
            for stream in self.streams:
                self._start(stream)
            self.started = True

    def _start(self, stream: Stream) -> None:
        s = self.settings
        read = threading.Thread(
            target=reader,
            args=(stream, self.muxer, s.backend.metadata, s.max_frames, s.reconnect, s.loop),
            name=f"cfnet-read-{stream.name}",
            daemon=True,
        )
        args: tuple[Any, ...] = (self.run, stream, self.muxer, s.backend, self.result, s.alpha, s.legend, s.on_frame)
        write = threading.Thread(
            target=writer, args=(*args, self.count), name=f"cfnet-write-{stream.name}", daemon=True
        )
        self.readers[stream.index] = read
        self.workers.append(write)
        read.start()
        write.start()

    def alive(self) -> list[threading.Thread]:
        with self.lock:
            return [t for t in self.workers if t.is_alive()]

    def supervise(self) -> None:
        """Stalls and outages on the clock (`runtime.stream.sources.supervise`); the heap's free pages back to
        the system now and then (`runtime.memory`)."""
        supervise(self.running(), self.muxer, self.settings.stall_timeout, self.settings.reconnect)
        self.trimmer.tick()

    def finish(self, grace: float) -> None:
        """After the run: wait up to `grace` s for the readers (one stuck in a read is left behind: a daemon),
        release the sources no reader holds, finalise every recording."""
        deadline = time.monotonic() + grace
        with self.lock:
            readers, streams = dict(self.readers), list(self.streams)
        for t in readers.values():
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        for stream in streams:
            if stream.src is not None and stream.index not in readers:
                stream.src.release()
            finish_recording(stream)
