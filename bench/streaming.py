"""Stream FPS: `runtime`'s video pipeline end to end against the backend alone on the same frames; K streams in
one pipeline against K sequential runs and K concurrent processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.timing import interleaved
from runtime.processes import die_with_parent, stop

BACKEND_ONLY_ROUNDS = 10


def stream_fps(video: Path, model: Path | str, device: str, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Stream `video` through `model` into the overlay MP4 `out`; FPS end to end and of the backend alone.

    The backend-only figure times `infer` on the video's first frame, preprocessed as the stream does, after
    the stream (warm); the end-to-end figure is frames over wall time of decode, preprocess, infer,
    overlay and encode threads together.
    """
    from runtime.backends import open_backend
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


def multi_stream(
    video: Path, model: Path | str, device: str, streams: int, out: Path, threads: int | None = None
) -> dict[str, Any]:
    """K copies of `video` through one `cfnet stream` pipeline (its default batch and inference workers, and
    batch K) against the naive alternatives on the same frames and model: the K streams one after another (K
    runs in turn) and K `cfnet stream` processes at once.

    Each variant runs in its own processes, so that peak memory (the RSS each `cfnet stream` reports) is the
    stream's, not the bench's. Frames/s use the pipelines' own seconds (model loading excluded): the
    pipeline's, the sum of the sequential runs', the longest of the concurrent ones'. Memory: the pipeline's
    peak, the largest sequential peak, the sum of the concurrent peaks (they hold K models at once).
    """
    out.mkdir(parents=True, exist_ok=True)
    base = ["--model", str(model), "--device", device, "--json"] + (["--threads", str(threads)] if threads else [])
    children: list[subprocess.Popen[bytes]] = []  # stopped however the bench ends; they die with it if killed

    def start(args: list[str], summary: str) -> tuple[subprocess.Popen[bytes], Path]:
        children.append(_start(args, out / summary))
        return children[-1], out / summary

    try:
        pipeline = _wait(start([str(video)] * streams + ["--out", str(out / "pipeline")] + base, "pipeline.json"))
        batched = _wait(start([str(video)] * streams + ["--out", str(out / "batched"), "--batch", str(streams), *base],
                              "batched.json"))
        sequential = [
            _wait(start([str(video), "--out", str(out / f"sequential-{i}.mp4"), *base], f"sequential-{i}.json"))
            for i in range(streams)
        ]
        procs = [start([str(video), "--out", str(out / f"concurrent-{i}.mp4"), *base], f"concurrent-{i}.json")
                 for i in range(streams)]
        concurrent = [_wait(p) for p in procs]
    finally:
        stop(children)
    agg = pipeline[0]["aggregate"]
    result = {
        "streams": streams,
        "pipeline_fps": agg["fps"],
        "pipeline_batch": agg["batch"],
        "pipeline_workers": agg["workers"],
        "batched_fps": batched[0]["aggregate"]["fps"],
        "sequential_fps": sum(r[0]["aggregate"]["frames"] for r in sequential)
        / sum(r[0]["aggregate"]["seconds"] for r in sequential),
        "concurrent_fps": sum(r[0]["aggregate"]["frames"] for r in concurrent)
        / max(r[0]["aggregate"]["seconds"] for r in concurrent),
        "pipeline_rss_mb": pipeline[1],
        "batched_rss_mb": batched[1],
        "sequential_rss_mb": max(r[1] for r in sequential),
        "concurrent_rss_mb": sum(r[1] for r in concurrent),
        "frames": agg["frames"],
        "batch_sizes": agg["batch_sizes"],
    }
    result["vs_sequential"] = result["pipeline_fps"] / result["sequential_fps"]
    result["vs_concurrent"] = result["pipeline_fps"] / result["concurrent_fps"]
    result["rss_vs_concurrent"] = result["pipeline_rss_mb"] / result["concurrent_rss_mb"]
    return result


def _start(args: list[str], summary: Path) -> subprocess.Popen[bytes]:
    """`cfnet stream ARGS` in a new process that dies with this one, its JSON summary going to `summary`."""
    with summary.open("wb") as stdout:
        return subprocess.Popen([sys.executable, "-m", "cfnet", "stream", *args], stdout=stdout,
                                stderr=subprocess.PIPE, preexec_fn=die_with_parent())


def _wait(started: tuple[subprocess.Popen[bytes], Path]) -> tuple[dict[str, Any], float]:
    """The process's JSON summary and its peak RSS in MB."""
    proc, summary = started
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        text = stderr.decode(errors="replace").strip()
        raise RuntimeError(f"cfnet stream failed: {text.splitlines()[-1] if text else f'exit {proc.returncode}'}")
    result = json.loads(summary.read_text())
    return result, float(result["aggregate"]["peak_rss_mb"] or 0.0)


def multistream_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The report's multi-stream section: a row per model and backend measured with `--streams K`."""
    measured = [row for row in rows if row.get("streams_pipeline_fps") is not None]
    if not measured:
        return []
    k = measured[0]["streams_k"]
    lines = [
        "## Multi-stream",
        "",
        f"{k} copies of the `--stream` video: one `cfnet stream` pipeline (its default batch and inference "
        f"workers, and `--batch {k}`) against the {k} streams one after another and {k} `cfnet stream` processes "
        "at once. Frames/s over the pipelines' own time (model loading excluded); peak RSS of the pipeline, of the "
        "largest sequential run, and the sum of the concurrent processes; ratios and batch sizes of the default "
        "pipeline.",
        "",
        f"| Model | Backend | Pipeline (frames/s) | Batch | Workers | Pipeline, batch {k} | Sequential | Concurrent "
        f"| vs sequential | vs concurrent | RSS pipeline (MB) | RSS batch {k} | RSS sequential | RSS concurrent "
        "| RSS vs concurrent | Batch sizes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in measured:
        lines.append(
            f"| {row['model']} | {row['backend']} | {row['streams_pipeline_fps']:.2f} | "
            f"{row['streams_pipeline_batch']} | {row['streams_pipeline_workers']} | {row['streams_batched_fps']:.2f} | "
            f"{row['streams_sequential_fps']:.2f} | {row['streams_concurrent_fps']:.2f} | "
            f"{row['streams_vs_sequential']:.2f}x | {row['streams_vs_concurrent']:.2f}x | "
            f"{row['streams_pipeline_rss_mb']:.0f} | {row['streams_batched_rss_mb']:.0f} | "
            f"{row['streams_sequential_rss_mb']:.0f} | "
            f"{row['streams_concurrent_rss_mb']:.0f} | {row['streams_rss_vs_concurrent']:.2f}x | "
            f"{row['streams_batch_sizes']} |"
        )
    return lines
