"""Measure the goals of issue 24 (results as data) on a quiet machine; prints the figures, exits 1 if a goal is missed.

    # what --emit costs a stream at 512x1024 with 19 classes (goal: under 10 % of the frame time)
    cfnet export onnx --checkpoint demo/checkpoints/cfnet-pspnet.pt --size 512x1024 --out demo/models/cfnet-512.onnx
    python scripts/measure_results.py cost --model demo/models/cfnet-512.onnx

    # flicker and mIoU with each smoothing (goal: flicker halved, mIoU at most 0.5 points lower)
    python scripts/measure_results.py flicker --model demo/models/cfnet-pspnet-fp32.onnx

    # drift score of shifted videos against the in-distribution one (goal: >= 3x, and in distribution never
    # above the default alert)
    python scripts/measure_results.py drift --model demo/models/cfnet-pspnet-fp32.onnx

Every figure comes from the runtime's own paths: `runtime.run_stream` with `emit`/`results` (what `cfnet stream
--emit --smooth` runs) and `bench.video.evaluate_video` (what `cfnet evaluate --video` runs). Videos are rendered
by `cfnet.data.synth` (the demo's street generator) into a temporary folder, shifted with OpenCV.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cfnet.data.synth import synthesize_video
from runtime import open_backend, run_stream
from runtime.results.defaults import DEFAULT_ALERT
from runtime.results.records import ResultOptions
from runtime.results.smoothing import parse_smoothing
from runtime.results.stage import ResultsConfig

COST_GOAL = 0.10
FLICKER_GOAL, MIOU_DROP_GOAL = 0.5, 0.5
DRIFT_GOAL = 3.0
SMOOTHINGS = ("ema:0.5", "hold:0.2", "hold:0.3", "flow", "flow:0.65:0.32", "flow:0.7:0", "vote:3", "vote:5")
COST_VARIANTS: dict[str, tuple[ResultOptions | None, str | None]] = {
    "no results": (None, None),
    "--emit (polygons)": (ResultOptions("polygon"), None),
    "--emit --regions rle": (ResultOptions("rle"), None),
    "--emit --regions none": (ResultOptions("none"), None),
    "--smooth hold:0.15": (None, "hold:0.15"),
    "--smooth vote:5": (None, "vote:5"),
    "--smooth flow": (None, "flow"),
}
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as rendered (in distribution)": lambda f: f,
    "darkened to night (x 0.25)": lambda f: (f * 0.25).astype(np.uint8),
    "fogged (65 % grey 200)": lambda f: cv2.addWeighted(f, 0.35, np.full_like(f, 200), 0.65, 0),
    "upside down (never-seen layout)": lambda f: f[::-1].copy(),
    "sensor noise (sigma 40)": lambda f: np.clip(f + np.random.default_rng(0).normal(0, 40, f.shape), 0, 255).astype(
        np.uint8
    ),
}


def _video(folder: Path, size: tuple[int, int], frames: int, seed: int, labels: bool = False) -> tuple[Path, Path]:
    video, truth = folder / "drive.mp4", folder / "drive-labels"
    synthesize_video(video, frames=frames, size=size, seed=seed, fps=15.0, labels=truth if labels else None)
    return video, truth


def cost(args: argparse.Namespace) -> bool:
    """Frame time of `run_stream` with each results option against none, rounds interleaved; the median."""
    with tempfile.TemporaryDirectory() as tmp, open_backend(args.model, device=args.device) as backend:
        classes = len(backend.metadata.classes)
        video, _ = _video(Path(tmp), (512, 1024), args.frames, seed=3)
        times: dict[str, list[float]] = {name: [] for name in COST_VARIANTS}
        post: dict[str, list[float]] = {name: [] for name in COST_VARIANTS}
        run_stream(video, backend, max_frames=5)  # warm-up
        for _ in range(args.rounds):
            for name, (options, smooth) in COST_VARIANTS.items():
                config = ResultsConfig(options or ResultOptions(), smooth=parse_smoothing(smooth) if smooth else None)
                emit = Path(tmp) / "results.jsonl" if options is not None else None
                stats = run_stream(video, backend, results=config, emit=emit)
                times[name].append(1000 / stats.fps)
                post[name].append(stats.latency_ms["postprocess"]["median"])
                if emit is not None:
                    emit.unlink()
    base = statistics.median(times["no results"])
    print(f"{args.model}: {classes} classes, 512x1024 frames, {args.frames} frames x {args.rounds} rounds")
    print(f"{'variant':<24}{'frame ms':>10}{'cost':>9}{'writer p50 ms':>15}")
    ok = True
    for name in COST_VARIANTS:
        frame = statistics.median(times[name])
        share = frame / base - 1
        print(f"{name:<24}{frame:>10.2f}{share:>+9.1%}{statistics.median(post[name]):>15.2f}")
        if name == "--emit (polygons)":
            ok = share < COST_GOAL
    print(f"goal: --emit under {COST_GOAL:.0%} of the frame time: {'met' if ok else 'MISSED'}")
    return ok


def flicker(args: argparse.Namespace) -> bool:
    """`cfnet evaluate --video` with every smoothing; the goal holds when one variant meets both bounds."""
    from bench.video import evaluate_video, format_video_scores

    with tempfile.TemporaryDirectory() as tmp:
        video, labels = args.video, args.labels
        if video is None:
            with open_backend(args.model, device="cpu") as backend:
                size = backend.metadata.input_size
            video, labels = _video(Path(tmp), size, args.frames, seed=1, labels=True)  # the demo's drive, longer
        report = evaluate_video(args.model, video, labels, smooth=SMOOTHINGS, device=args.device)
    print(format_video_scores(report))
    met = [
        name for name, r in report["results"].items()
        if name != "none" and r["flicker_ratio"] <= FLICKER_GOAL and r["miou_change"] >= -MIOU_DROP_GOAL
    ]  # fmt: skip
    print(
        f"goal: flicker x {FLICKER_GOAL} or less, mIoU at most {MIOU_DROP_GOAL} pt lower: "
        + (f"met by {', '.join(met)}" if met else "MISSED")
    )
    return bool(met)


def drift(args: argparse.Namespace) -> bool:
    """The drift score of `run_stream` (what `cfnet stream --emit` records) over the video and its shifts."""
    config = ResultsConfig(ResultOptions("none"), drift_alert=DEFAULT_ALERT)
    rows: dict[str, np.ndarray] = {}
    alerts: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp, open_backend(args.model, device=args.device) as backend:
        if backend.metadata.reference is None:
            print(f"{args.model} has no cfnet.reference: export it with --calib-data", file=sys.stderr)
            return False
        video, _ = _video(Path(tmp), backend.metadata.input_size, args.frames, seed=7)  # a drive never trained on
        for name, shift in SHIFTS.items():
            shifted = _shifted(video, Path(tmp) / "shifted.mp4", shift)
            records: list[dict[str, Any]] = []
            run_stream(shifted, backend, results=config, on_result=records.append)
            rows[name] = np.array([r["drift"]["score"] for r in records])
            alerts[name] = any(r["drift"]["alerting"] for r in records)
    normal = rows["as rendered (in distribution)"]
    print(f"{args.model}: {args.frames} frames at 15 fps, default alert {DEFAULT_ALERT}")
    print(f"{'video':<34}{'score max':>10}{'mean':>8}{'x in-dist.':>12}{'alert':>7}")
    for name, scores in rows.items():
        ratio = scores.mean() / normal.mean() if normal.mean() > 0 else float("inf")
        print(f"{name:<34}{scores.max():>10.3f}{scores.mean():>8.3f}{ratio:>12.1f}{'yes' if alerts[name] else 'no':>7}")
    quiet = normal.max() <= DEFAULT_ALERT and not alerts["as rendered (in distribution)"]
    risen = [name for name, s in rows.items() if s is not normal and s.mean() >= DRIFT_GOAL * normal.mean()]
    print(
        f"goal: in distribution never above {DEFAULT_ALERT}: {'met' if quiet else 'MISSED'}; "
        f"a shift >= {DRIFT_GOAL:g}x: " + (f"met by {', '.join(risen)}" if risen else "MISSED")
    )
    return quiet and bool(risen)


def _shifted(video: Path, out: Path, shift: Callable[[np.ndarray], np.ndarray]) -> Path:
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS)
    writer = None
    while (read := capture.read())[0]:
        frame = shift(read[1])
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), fps, frame.shape[1::-1])
        writer.write(frame)
    capture.release()
    assert writer is not None, f"no frame in {video}"
    writer.release()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="goal", required=True)
    for name, frames in (("cost", 40), ("flicker", 150), ("drift", 300)):
        command = sub.add_parser(name)
        command.add_argument("--model", required=True, help="ONNX model, engine or grpc://HOST:PORT/NAME")
        command.add_argument("--device", default="auto")
        command.add_argument("--frames", type=int, default=frames, help="frames of the rendered video")
    sub.choices["cost"].add_argument("--rounds", type=int, default=3)
    sub.choices["flicker"].add_argument("--video", type=Path, help="a labelled video (default: rendered)")
    sub.choices["flicker"].add_argument("--labels", type=Path, help="its *_gtFine_labelIds.png folder")
    args = parser.parse_args()
    if args.goal == "flicker" and (args.video is None) != (args.labels is None):
        parser.error("flicker: give --video and --labels together (or neither: a rendered drive)")
    goal = {"cost": cost, "flicker": flicker, "drift": drift}[args.goal]
    sys.exit(0 if goal(args) else 1)


if __name__ == "__main__":
    main()
