"""`cfnet evaluate --video`: a deployed model's flicker and mIoU over a labelled video, with and without smoothing.

Every frame runs through the runtime once (`runtime.preprocess`, the backend, `runtime.postprocess`); each
`--smooth` variant smooths that same output as `cfnet stream --smooth` does (`runtime.results.stage`: `ema:A`,
`hold:D` and `flow:A:D` the logits, `vote:K` the mask, reset at scene cuts) and is scored beside the unsmoothed
masks, with `cfnet.metrics.VideoScores` (flicker and mIoU over the whole video).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cfnet.errors import UserError

LABEL_SUFFIX = "_gtFine_labelIds.png"


def label_files(folder: str | Path) -> list[Path]:
    """The video's per-frame label files in frame order (`*_gtFine_labelIds.png`, as `data synth --video-labels`
    writes them; sorted by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("label folder not found", str(folder))
    files = sorted(folder.glob(f"*{LABEL_SUFFIX}"))
    if not files:
        raise UserError(f"no *{LABEL_SUFFIX} files in the label folder", str(folder))
    return files


def evaluate_video(
    model: str | Path,
    video: str | Path,
    labels: str | Path,
    *,
    smooth: Sequence[str] = (),
    device: str = "auto",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score `model` (`.onnx`, `.engine` or `grpc://...`) on `video` against the labelIds PNGs in `labels` (one
    per frame, in name order; frames beyond the labels are not read). Returns `model`, `video`, `frames` and
    `results`: `none` and each `smooth` variant -> `miou`, `pixel_accuracy`, `flicker` and, for the variants,
    `flicker_ratio` (smoothed over unsmoothed) and `miou_change` (points of mIoU, smoothed minus unsmoothed)."""
    import cv2

    from cfnet.data.cityscapes import read_label
    from cfnet.metrics import VideoScores
    from runtime import open_backend
    from runtime.postprocess import postprocess
    from runtime.preprocess import preprocess
    from runtime.results.records import ResultOptions
    from runtime.results.smoothing import parse_smoothing
    from runtime.results.stage import ResultsConfig, StreamResults

    try:
        specs = [parse_smoothing(text) for text in smooth]
    except ValueError as exc:
        raise UserError(str(exc), "--smooth") from None
    files = label_files(labels)
    if not Path(video).is_file():
        raise UserError("video not found", str(video))
    capture = cv2.VideoCapture(str(video))
    try:
        with open_backend(model, device=device) as backend:
            classes = backend.metadata.classes
            smoothers = {
                str(spec): StreamResults(
                    ResultsConfig(ResultOptions("none"), smooth=spec), classes, None, stream="video", source=str(video)
                )
                for spec in specs
            }
            scores = {name: VideoScores(len(classes)) for name in ["none", *smoothers]}
            for index, path in enumerate(files):
                ok, frame = capture.read()
                if not ok:
                    if index == 0:
                        raise UserError("cannot read a frame of the video", str(video))
                    break
                target = read_label(path, train_ids=False)
                if target.shape != frame.shape[:2]:
                    raise UserError(f"label {target.shape} and frame {frame.shape[:2]} sizes differ", str(path))
                batch, infos = preprocess(frame, backend.metadata)
                output = backend.infer(batch)
                mask = postprocess(output, infos)[0]
                scores["none"].update(mask, target)
                for name, stage in smoothers.items():
                    scores[name].update(stage.mask(output[0], infos[0], frame), target)
                if log is not None and (index + 1) % 50 == 0:
                    log(f"{index + 1}/{len(files)} frames")
    finally:
        capture.release()
    results = {name: score.scores() for name, score in scores.items()}
    base = results["none"]
    for name in smoothers:
        result = results[name]
        result["flicker_ratio"] = _ratio(result["flicker"], base["flicker"])
        result["miou_change"] = 100 * (result["miou"] - base["miou"])
    return {"model": str(model), "video": str(video), "frames": int(base["frames"]), "results": results}


def _ratio(value: float, base: float) -> float:
    return value / base if base and np.isfinite(base) else float("nan")


def format_video_scores(report: dict[str, Any]) -> str:
    """The report as a table: one row per variant."""
    width = max(12, *(len(name) + 2 for name in report["results"]))
    lines = [
        f"{report['model']} on {report['video']} ({report['frames']} frames)",
        f"{'smoothing':<{width}}{'mIoU':>8}{'flicker':>10}{'flicker x':>11}{'mIoU change':>13}",
    ]
    for name, r in report["results"].items():
        ratio = f"{r['flicker_ratio']:.2f}" if "flicker_ratio" in r else "-"
        change = f"{r['miou_change']:+.2f} pt" if "miou_change" in r else "-"
        lines.append(f"{name:<{width}}{r['miou']:>8.4f}{r['flicker']:>10.4f}{ratio:>11}{change:>13}")
    return "\n".join(lines)
