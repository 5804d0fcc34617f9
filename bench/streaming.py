"""Stream FPS: `runtime`'s video pipeline end to end against the backend alone on the same frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.timing import interleaved

BACKEND_ONLY_ROUNDS = 10


def stream_fps(video: Path, model: Path | str, device: str, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Stream `video` through `model` into the overlay MP4 `out`; FPS end to end and of the backend alone.

    The backend-only figure times `infer` on the video's first frame, preprocessed as the stream does, after
    the stream (warm); the end-to-end figure is frames over wall time of decode, preprocess, infer,
    overlay and encode threads together.
    """
    from runtime.backend import open_backend
    from runtime.preprocess import preprocess
    from runtime.stream import run_stream
    from runtime.video import VideoSource

    out.parent.mkdir(parents=True, exist_ok=True)
    with open_backend(model, device=device, threads=threads) as backend:
        stats = run_stream(str(video), backend, out=out)
        source = VideoSource(str(video))
        try:
            first = source.read()
        finally:
            source.release()
        assert first is not None  # VideoSource refuses sources without frames
        batch, _ = preprocess(first, backend.metadata)
        calls = {"infer": lambda: backend.infer(batch)}
        timing = interleaved(calls, warmup=1, iters=BACKEND_ONLY_ROUNDS, pause=0)["infer"]  # one backend: no pause
    return {
        "stream_fps": stats.fps,
        "backend_fps": 1.0 / timing.median,
        "frames": stats.frames,
        "stream_infer_ms": stats.latency_ms.get("infer", {}).get("median"),
        "input_size": "x".join(str(d) for d in batch.shape[-2:]),
        "output": stats.output,
    }
