"""The demo's `REPORT.md`, rendered from the figures the run wrote to `demo.json` (nothing typed by hand)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.machine import describe
from bench.paper import PAPER
from bench.report import markdown_table
from cfnet.atomic import write_bytes

MIOU_TARGET = 0.6
BACKEND_OF = {"fp32": "onnxruntime", "fp16": "onnxruntime-fp16", "int8": "onnxruntime-int8"}


def overlay_strip(video: Path, out: Path, count: int = 4, height: int = 160) -> Path:
    """`count` frames spread over `video`, side by side at `height` pixels, as one PNG."""
    import cv2
    import numpy as np

    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for index in np.linspace(0, max(total - 1, 0), count).round().astype(int):
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        if ok:
            scale = height / frame.shape[0]
            frames.append(cv2.resize(frame, (round(frame.shape[1] * scale), height)))
    capture.release()
    if not frames:
        raise ValueError(f"no frame could be read from {video}")
    ok, encoded = cv2.imencode(".png", np.hstack(frames))
    if not ok:
        raise ValueError(f"cannot encode {out}")
    return write_bytes(out, encoded.tobytes())


def _rel(path: str | Path, base: Path) -> str:
    return os.path.relpath(Path(path), base)


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def render(out: Path, figures: dict[str, Any]) -> str:
    """REPORT.md's text; every number comes from `figures` (the run's `demo.json`)."""
    config, metrics, rows = figures["config"], figures["metrics"], figures["bench"]["rows"]
    by = {(row["model"], row["backend"]): row for row in rows}
    ours, baseline = metrics["cfnet-pspnet"]["miou"], metrics["segformer"]["miou"]
    verdict = "met" if ours >= MIOU_TARGET else "not met"
    size = "x".join(str(d) for d in config["size"])
    lines = [
        "# cfnet demo report",
        "",
        f"Synthetic Cityscapes-layout data ({config['train_images']} train / {config['val_images']} val images at "
        f"{size}) and a {config['frames']}-frame driving video, on {describe(figures['bench']['machine'])}; "
        f"stages took {sum(figures['seconds'].values()):.0f} s in all.",
        "",
        "## Result",
        "",
        f"- Tiny cfnet-pspnet val mIoU **{ours:.3f}** (target >= {MIOU_TARGET}: {verdict}) beside the tiny "
        f"SegFormer baseline trained the same way: **{baseline:.3f}**.",
    ]
    for precision in ("fp16", "int8"):
        row = by.get(("cfnet-pspnet", BACKEND_OF[precision]), {})
        lines.append(f"- {precision} ONNX argmax agreement with PyTorch on the val split: "
                     f"**{_fmt(row.get('agreement'), '.4f')}** ({row.get('status', 'not run')})")
    stream = figures["stream"]
    lines += [
        f"- Stream: **{stream['stream_fps']:.1f} FPS** end to end (decode, preprocess, infer, overlay, encode) on "
        f"{stream['frames']} frames, against {_fmt(stream.get('backend_fps'), '.1f')} FPS for the backend alone.",
        "",
        "## Training curves",
        "",
    ]
    for name, checkpoint in figures["checkpoints"].items():
        curves = Path(checkpoint).parent / "curves.png"
        lines.append(f"![{name} training curves]({_rel(curves, out)})")
    lines += [
        "",
        "## Metrics (synthetic val split)",
        "",
        "| Model | mIoU | mean Dice | Pixel accuracy | Images | Paper mIoU (Cityscapes) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, scores in metrics.items():
        lines.append(f"| {name} | {scores['miou']:.3f} | {scores['mdice']:.3f} | {scores['pixel_accuracy']:.3f} | "
                     f"{scores['images']} | {PAPER[name].miou:.3f} |")
    lines += [
        "",
        "## Export (cfnet-pspnet)",
        "",
        "| Precision | File | MB | Agreement with PyTorch | mIoU |",
        "|---|---|---:|---:|---:|",
    ]
    for precision, info in figures["exports"].items():
        row = by.get(("cfnet-pspnet", BACKEND_OF[precision]), {})
        link = f"[{Path(info['path']).name}]({_rel(info['path'], out)})"
        lines.append(f"| {precision} | {link} | {info['megabytes']:.2f} | {_fmt(row.get('agreement'), '.4f')} | "
                     f"{_fmt(row.get('miou'), '.3f')} |")
    bench_dir = Path(figures["bench"]["report"]).parent
    lines += [
        "",
        "## Bench",
        "",
        markdown_table(rows),
        "",
        f"Full report: [{_rel(figures['bench']['report'], out)}]({_rel(figures['bench']['report'], out)}).",
        "",
        f"![latency]({_rel(bench_dir / 'latency.png', out)})",
    ]
    if (bench_dir / "accuracy.png").exists():
        lines.append(f"![speed against accuracy]({_rel(bench_dir / 'accuracy.png', out)})")
    lines += [
        "",
        "## Stream",
        "",
        f"Overlay video: [{_rel(stream['video'], out)}]({_rel(stream['video'], out)}); frames from it:",
        "",
        f"![overlay frames]({_rel(stream['strip'], out)})",
        "",
        "## Stage times (s)",
        "",
        "| Stage | Seconds |",
        "|---|---:|",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in figures["seconds"].items()],
    ]
    return "\n".join(lines) + "\n"


def write_demo_report(out: Path, figures: dict[str, Any]) -> Path:
    """Write `out/REPORT.md` from `figures`."""
    path = out / "REPORT.md"
    return write_bytes(path, render(out, figures).encode())
