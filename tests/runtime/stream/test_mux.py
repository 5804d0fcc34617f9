"""The cross-stream muxer on its own: no video, no model."""

from __future__ import annotations

import threading

import numpy as np

from runtime.preprocess import FrameInfo
from runtime.stream.mux import Muxer
from runtime.stream.state import Frame, Run, Stream
from runtime.stream.stats import StreamStats


def test_the_muxer_pushes_a_full_batch_at_once_and_a_partial_one_when_its_oldest_frame_timed_out() -> None:

    frame = np.zeros((4, 4, 3), np.uint8)
    info = FrameInfo((4, 4), (4, 4), (4, 4))

    def item(stream: Stream, index: int) -> Frame:
        return Frame(stream, index, frame, 0.0, np.zeros((1, 3, 4, 4), np.float32), info)

    def streams() -> list[Stream]:
        stats = [StreamStats(str(i), None, "b", True, (4, 4), 10.0, name=str(i)) for i in range(2)]
        return [Stream(i, stats[i], 2) for i in range(2)]

    # timeout 50 ms, only stream 0 has a frame: the batch goes out partial while stream 1 is still open
    runs = [Run(), Run()]
    timers = [threading.Timer(10, run.stop.set) for run in runs]  # a stopped run's next_batch returns None
    for timer in timers:
        timer.start()
    short = Muxer(streams(), 2, 0.05, runs[0])
    short.put(short.streams[0], item(short.streams[0], 0))
    batch = short.next_batch()
    assert batch is not None and [(i.stream.index, i.index) for i in batch[0]] == [(0, 0)] and batch[1] == []
    # a timeout of a minute: the batch waits for the second stream's frame and goes out when full
    long = Muxer(streams(), 2, 60.0, runs[1])
    first, second = long.streams
    long.put(first, item(first, 0))
    threading.Timer(0.1, lambda: long.put(second, item(second, 0))).start()
    batch = long.next_batch()
    assert batch is not None and [(i.stream.index, i.index) for i in batch[0]] == [(0, 0), (1, 0)]
    # a stream that closes ends with its marker after its last frame; when all have, no more batches
    long.close(first, "end")
    long.close(second, "end")
    assert long.next_batch() == ([], [first, second])
    assert long.next_batch() is None
    for timer in timers:
        timer.cancel()

