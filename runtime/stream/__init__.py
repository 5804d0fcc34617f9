"""Video-stream segmentation of 1..N sources in one pipeline.

One reader thread per source (open and reopen it, decode, adapt grayscale/BGRA and off-size frames,
pre-process) -> one muxer
that forms batches across the sources -> `workers` inference threads -> one writer thread per source
(argmax, overlay, encode, callbacks). `run_stream` (one source) and `run_streams` (several) both run this
pipeline.

Per stream: order is kept; a file loses no frame (its reader blocks when its queue is full); a live source
drops its own oldest waiting frame when inference lags; a source that ends, fails or stalls
(`stall_timeout`) ends its own stream (its MP4 finalised) while the others go on, or, for a live source
under a `Reconnect` policy, is reopened (`runtime.stream.sources`). Ctrl-C, SIGTERM, a closed window or an
inference error stop every thread at once; every MP4 is finalised on any exit.

The cross-stream muxer (`runtime.stream.mux`) forms the batches; streams join and leave a running pipeline
(`runtime.stream.pipeline`, `runtime.stream.control`: the control API and sources files); recordings roll,
are retained and pause on a full disk (`runtime.stream.recording`).

Several inference threads (a backend whose `infer` may run concurrently: ONNX Runtime) keep the cores busy
while one call is in a serial part of the graph; their batches finish out of order, so the muxer numbers
each stream's frames and the stream's writer puts them back in that order before writing. A frame leaves
inference with its mask, or a copy of its scores for a stream whose results read them: nothing the writers
hold is the backend's memory (`runtime.stream.stages.take`).

`RunStats` is the one place an observer reads the live state (counters, the newest overlay per stream):
the pipeline updates it in place, without locks on the hot path.
"""

from __future__ import annotations

from runtime.stream.control import StreamControl, read_sources
from runtime.stream.display import gui_available
from runtime.stream.run import (
    DEFAULT_BATCH_TIMEOUT_MS,
    DEFAULT_STALL_TIMEOUT_S,
    FrameCallback,
    ProgressCallback,
    run_stream,
    run_streams,
)
from runtime.stream.sizing import CPU_WORKERS, default_batch, default_workers, worker_threads
from runtime.stream.sources import Reconnect
from runtime.stream.stages import StreamFrameCallback
from runtime.stream.stats import RunStats, StreamStats

__all__ = [
    "CPU_WORKERS",
    "DEFAULT_BATCH_TIMEOUT_MS",
    "DEFAULT_STALL_TIMEOUT_S",
    "FrameCallback",
    "ProgressCallback",
    "Reconnect",
    "RunStats",
    "StreamControl",
    "StreamFrameCallback",
    "StreamStats",
    "default_batch",
    "default_workers",
    "gui_available",
    "read_sources",
    "run_stream",
    "run_streams",
    "worker_threads",
]
