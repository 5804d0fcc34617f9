"""The cross-stream muxer: frames of every stream wait here and leave in batches across the streams.

It runs when an inference thread asks for work: it takes the frames waiting at that moment, round robin over
the streams, and waits for more only while the batch is not full and its oldest frame has waited less than
`batch_timeout_ms` (DeepStream's `batched-push-timeout`). A batch holds frames of one input size only (the
letterboxed, padded canvas): padding a frame further would change what a model with global context (pyramid
pooling, attention) sees, so masks would differ from a single-stream run.

Streams join (`add`) and leave while it runs: a stream that has drained leaves its list. With `keep_open` (a
run whose sources may be added later) it waits for new streams when none is left, instead of ending the run.
"""

from __future__ import annotations

import threading
import time

from runtime.stream.state import Frame, Phase, Run, Stream


class Muxer:
    """Frames of every stream wait here; `next_batch()` forms a batch across the streams (see the module doc)."""

    def __init__(self, streams: list[Stream], size: int, timeout_s: float, run: Run, keep_open: bool = False) -> None:
        self.streams, self.size, self.timeout, self.run, self.keep_open = list(streams), size, timeout_s, run, keep_open
        self.cond = threading.Condition()
        self.turn = 0
        self.finished = False  # next_batch returned None: no stream may join any more

    def add(self, stream: Stream) -> bool:
        """A new stream joins the batches (False once the run has finished or is stopping)."""
        with self.cond:
            if self.finished or self.run.stop.is_set():
                return False
            self.streams.append(stream)
            self.cond.notify_all()
            return True

    def put(self, stream: Stream, item: Frame) -> bool:
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

    def close(self, stream: Stream, reason: str, drop: bool = False) -> None:
        """No more frames from `stream` (`drop`: also forget those waiting)."""
        with self.cond:
            if stream.phase == Phase.OPEN:
                stream.phase = Phase.CLOSED
                stream.end(reason)
            stream.wake.set()
            if drop:
                stream.pending.clear()
            self.cond.notify_all()

    def next_batch(self) -> tuple[list[Frame], list[Stream]] | None:
        """`(items, streams that ended)`, or None when every stream has ended (and the caller holds no frame;
        never while `keep_open`) or the run is stopping. Once every stream has ended, frames held for a batch go
        at once."""
        items: list[Frame] = []
        with self.cond:
            while not self.run.stop.is_set():
                self._take(items)
                ended = [s for s in self.streams if s.phase == Phase.CLOSED and not s.pending]
                for s in ended:
                    s.phase = Phase.DRAINED
                    self.streams.remove(s)
                now = time.perf_counter()
                idle = not self.streams  # no frame will come: send what is held
                if ended or len(items) >= self.size or (items and (idle or now - items[0].ready >= self.timeout)):
                    self.cond.notify_all()  # room for the readers
                    return items, ended
                if idle and not self.keep_open:
                    self.finished = True
                    return None
                wait = self.timeout - (now - items[0].ready) if items else 0.05
                self.cond.wait(max(0.001, min(wait, 0.05)))
        return None

    def _take(self, items: list[Frame]) -> None:
        """Move waiting frames into `items`, round robin from a rotating first stream, one input size only."""
        if not self.streams:
            return
        canvas = items[0].batch.shape[2:] if items else None
        self.turn %= len(self.streams)
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
