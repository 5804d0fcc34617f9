"""The `triton` row of `cfnet bench`: the model served by a real Triton server on this machine (`cfnet serve`).

The timing loop measures `{name}_model` through the client backend (preprocessed batch -> logits over gRPC);
`serving()` measures what a camera client sees: frames -> masks through the ensemble, one stream and N
concurrent streams (which the server's dynamic batcher groups), bytes on the wire, the server's average batch.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.timing import Timing

STREAMS = 4


class TritonRunner:
    """Exports `onnx` to a repository (ONNX Runtime in the Python backend), serves it on free loopback ports."""

    name = "triton"

    def __init__(self, onnx: Path, folder: Path) -> None:
        from export.triton import export_triton
        from runtime.backends.triton import TritonBackend
        from runtime.triton.server import TritonServer, free_ports

        repository = folder / f"{onnx.stem}-triton"
        export_triton(onnx, repository, backend="python", overwrite=True)
        http, grpc, metrics = free_ports(3)
        self.server = TritonServer(repository, http_port=http, grpc_port=grpc, metrics_port=metrics).start()
        self.url = f"grpc://127.0.0.1:{grpc}/cfnet"
        try:
            self.backend = TritonBackend(self.url)
        except BaseException:
            self.server.stop()
            raise

    def infer(self, images: np.ndarray) -> np.ndarray:
        return self.backend.infer(images)

    def serving(self, frame: np.ndarray, frames: int, streams: int = STREAMS) -> dict[str, Any]:
        """Frames -> masks through the ensemble: latency and FPS of one stream, FPS of `streams` at once."""
        from runtime.backends.triton import TritonBackend

        self.backend.segment_frames(frame[None])  # warm-up
        sent, received = self.backend.bytes_sent, self.backend.bytes_received
        times = []
        start = time.perf_counter()
        for _ in range(frames):
            t = time.perf_counter()
            self.backend.segment_frames(frame[None])
            times.append(time.perf_counter() - t)
        one = frames / (time.perf_counter() - start)
        latency = Timing(tuple(times))
        before = self.server.batch_counters("cfnet_model")
        clients = [TritonBackend(self.url) for _ in range(streams)]
        workers = [threading.Thread(target=_send, args=(c, frame, frames)) for c in clients]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        many = streams * frames / (time.perf_counter() - start)
        after = self.server.batch_counters("cfnet_model")
        for c in clients:
            c.close()
        return {
            "serve_p50_ms": latency.median * 1e3,
            "serve_p90_ms": latency.p90 * 1e3,
            "serve_fps_1": one,
            "serve_fps_n": many,
            "serve_streams": streams,
            "serve_avg_batch": (after[0] - before[0]) / max(1.0, after[1] - before[1]),
            "serve_bytes_sent": (self.backend.bytes_sent - sent) / frames,
            "serve_bytes_received": (self.backend.bytes_received - received) / frames,
        }

    def close(self) -> None:
        self.backend.close()
        self.server.stop()


def _send(client: Any, frame: np.ndarray, frames: int) -> None:
    for _ in range(frames):
        client.segment_frames(frame[None])
