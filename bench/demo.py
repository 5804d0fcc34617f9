"""`cfnet demo`: the whole chain on embedded synthetic data, in one command, with a report of what it measured.

Stages: synthesise a Cityscapes-layout set and a driving video -> train a tiny cfnet-pspnet and, the same
way, a tiny segformer -> evaluate both -> export fp32, fp16 and int8 ONNX (parity printed) -> a quick bench
(speed and accuracy per backend) -> stream the video to an overlay MP4 -> `OUT/REPORT.md`.
Every figure of REPORT.md comes from `OUT/demo.json`, which this run writes.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.demo_report import overlay_strip, write_demo_report
from bench.runners import BACKENDS
from cfnet.atomic import write_bytes
from cfnet.errors import UserError

MODELS = ("cfnet-pspnet", "segformer")
PRECISIONS = ("fp32", "fp16", "int8")
MARKER = ".cfnet-demo"
"""Written first into OUT: the folder is the demo's, and a rerun may replace the demo's outputs in it."""
FOLDERS = ("data", *(f"runs/{name}" for name in MODELS), "bench")
"""The folders the demo writes whole (a rerun replaces them)."""
FILES = ("video.mp4", *(f"checkpoints/{name}.pt" for name in MODELS),
         *(f"models/cfnet-pspnet-{precision}.onnx" for precision in PRECISIONS),
         "overlay.mp4", "overlay_strip.png", "demo.json", "REPORT.md")
"""The files the demo writes (each replaced by its new version)."""


@dataclass
class DemoConfig:
    """Sizes of the demo run. The defaults (measured on the 2-core dev box) train cfnet-pspnet tiny to val
    mIoU 0.618 in about 4.5 minutes (SegFormer: 3) and finish the whole demo in about 8 minutes."""

    out: Path = Path("demo")
    train_images: int = 120
    val_images: int = 30
    size: tuple[int, int] = (128, 256)
    frames: int = 48
    train_iters: int = 1000
    batch_size: int = 4
    lr: float = 2e-3
    bench_iters: int = 5
    seed: int = 0


class Stages:
    """Prints `[demo i/n] stage ...` before and the seconds taken after each stage; keeps the timings."""

    NAMES = ("synthesise data and video", "train cfnet-pspnet", "train segformer", "evaluate",
             "export ONNX fp32/fp16/int8", "bench", "stream video", "report")

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.seconds: dict[str, float] = {}

    def run(self, name: str, work: Callable[[], Any]) -> Any:
        index = self.NAMES.index(name) + 1
        self.echo(f"[demo {index}/{len(self.NAMES)}] {name} ...")
        start = time.perf_counter()
        result = work()
        self.seconds[name] = time.perf_counter() - start
        self.echo(f"[demo {index}/{len(self.NAMES)}] {name}: done in {self.seconds[name]:.1f} s")
        return result


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_demo(config: DemoConfig, echo: Callable[[str], None] = _stderr, *, overwrite: bool = False) -> dict[str, Any]:
    """Run every stage into `config.out`; returns the figures also written to `OUT/demo.json`.

    `overwrite`: write into a non-empty folder the demo did not make (see `prepare_out`)."""
    import torch

    torch.manual_seed(config.seed)
    out = config.out
    prepare_out(out, overwrite)
    stages = Stages(echo)
    data, video = stages.run("synthesise data and video", lambda: _synthesise(config))
    runs: dict[str, Path] = {name: stages.run(f"train {name}", partial(_train, config, name, data)) for name in MODELS}
    metrics = stages.run("evaluate", lambda: _evaluate(runs, data))
    exports = stages.run("export ONNX fp32/fp16/int8", lambda: _export(config, runs["cfnet-pspnet"], data))
    bench = stages.run("bench", lambda: _bench(config, runs, data, exports))
    stream = stages.run("stream video", lambda: _stream(config, exports["fp32"]["path"], video))
    figures: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "data": str(data),
        "video": str(video),
        "checkpoints": {name: str(path) for name, path in runs.items()},
        "metrics": metrics,
        "exports": exports,
        "bench": {"report": str(bench["paths"]["markdown"]), "rows": bench["result"]["rows"],
                  "machine": bench["result"]["machine"]},
        "stream": stream,
        "seconds": dict(stages.seconds),
    }
    _write_json(out / "demo.json", figures)
    report = stages.run("report", lambda: write_demo_report(out, figures))
    echo(f"report: {report}\ndata: {data}\nvideo: {video}\ncheckpoints: {config.out / 'checkpoints'}\n"
         f"ONNX models: {config.out / 'models'}\nbench: {bench['paths']['markdown']}\n"
         f"overlay video: {stream['video']}\nfigures: {out / 'demo.json'}")
    return figures


def prepare_out(out: Path, overwrite: bool) -> None:
    """Make `out` the demo's folder, deleting nothing the demo did not write.

    A new or empty folder, or one the demo made (its `MARKER`, or `demo.json` of a run from before the marker),
    is used as is: a rerun replaces the demo's own `FOLDERS` and `FILES`. Any other non-empty folder is refused
    unless `overwrite`; then the demo writes beside what is there and replaces existing files at its `FILES`
    paths, but refuses where one of its `FOLDERS` exists (replacing it would delete what else it holds).
    """
    if out.exists() and not out.is_dir():
        raise UserError("--out exists and is not a folder", str(out))
    ours = (out / MARKER).is_file() or (out / "demo.json").is_file()
    if out.is_dir() and not ours and any(out.iterdir()):
        if not overwrite:
            raise UserError(
                "--out is not empty and was not made by cfnet demo: choose a new or empty folder, or pass "
                "--overwrite to add the demo's files to it (nothing else in it is replaced or deleted)",
                str(out),
            )
        taken = next((name for name in FOLDERS if (out / name).exists()), None)
        if taken is not None:
            raise UserError(
                f"{taken} exists and was not written by cfnet demo, which would replace it whole: move it or "
                "choose another --out",
                str(out / taken),
            )
    out.mkdir(parents=True, exist_ok=True)
    note = f"written by cfnet demo; a rerun replaces {', '.join((*FOLDERS, *FILES))}\n"
    write_bytes(out / MARKER, note.encode())


def _synthesise(config: DemoConfig) -> tuple[Path, Path]:
    from cfnet.data.synth import synthesize, synthesize_video

    data = config.out / "data"
    synthesize(data, train=config.train_images, val=config.val_images, size=config.size, seed=config.seed,
               overwrite=True)
    video = synthesize_video(config.out / "video.mp4", frames=config.frames, size=config.size, seed=config.seed + 1,
                             labels=config.out / "video-labels", overwrite=True)  # truth for `evaluate --video`
    return data, Path(video)


def _train(config: DemoConfig, name: str, data: Path) -> Path:
    from cfnet.train import TrainConfig, train

    run_dir = config.out / "runs" / name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo owns its run folders; a rerun starts afresh
    train_config = TrainConfig(
        model=name,
        data=str(data),
        out=str(run_dir),
        preset="tiny",
        iters=config.train_iters,
        batch_size=config.batch_size,
        crop=config.size,
        lr=config.lr,
        poly=True,
        val_every=max(1, config.train_iters // 4),
        save_every=config.train_iters,
        log_every=max(1, config.train_iters // 20),
        workers=0,
        device="cpu",
        seed=config.seed,
    )
    return Path(train(train_config))


def _evaluate(runs: dict[str, Path], data: Path) -> dict[str, dict[str, Any]]:
    from cfnet.checkpoint import load_model
    from cfnet.data.cityscapes import CityscapesDataset
    from cfnet.data.transforms import eval_transform
    from cfnet.evaluate import evaluate

    dataset = CityscapesDataset(data, "val", transform=eval_transform())
    results = {}
    for name, path in runs.items():
        scores = evaluate(load_model(path, expect_model=name), dataset)
        results[name] = {k: scores[k] for k in ("miou", "mdice", "pixel_accuracy", "images")}
    return results


def _calibration(data: Path, count: int = 8) -> list[Any]:
    from cfnet.data.cityscapes import CityscapesDataset
    from cfnet.data.transforms import eval_transform

    dataset = CityscapesDataset(data, "train", transform=eval_transform())
    return [dataset[i][0].numpy()[None] for i in range(min(count, len(dataset)))]


def _export(config: DemoConfig, checkpoint: Path, data: Path) -> dict[str, dict[str, Any]]:
    from cfnet.checkpoint import load_model
    from export.onnx import export_onnx

    model = load_model(checkpoint, expect_model="cfnet-pspnet")
    folder = config.out / "models"
    folder.mkdir(parents=True, exist_ok=True)
    exports = {}
    for precision in PRECISIONS:
        path = folder / f"cfnet-pspnet-{precision}.onnx"
        # int8 calibrates on them; fp32 keeps their drift reference (cfnet.reference) for `stream --emit`
        calib = _calibration(data) if precision in ("fp32", "int8") else None
        written = export_onnx(model, path, size=config.size, precision=precision, calib_images=calib)
        exports[precision] = {"path": str(written), "megabytes": Path(written).stat().st_size / 1e6}
    return exports


def _bench(config: DemoConfig, runs: dict[str, Path], data: Path, exports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from bench.report import write_report
    from bench.run import BenchConfig, run_bench

    checkpoints = config.out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for name, path in runs.items():
        shutil.copyfile(path, checkpoints / f"{name}.pt")
    bench_config = BenchConfig(
        models=MODELS,
        preset="tiny",
        size=config.size,
        backends=BACKENDS,
        warmup=1,
        iters=config.bench_iters,
        checkpoints=checkpoints,
        data=data,
        out=config.out / "bench",
        seed=config.seed,
        artifacts={"cfnet-pspnet": {precision: Path(info["path"]) for precision, info in exports.items()}},
        command=" ".join(["cfnet", *sys.argv[1:]]),
    )
    result = run_bench(bench_config)
    return {"result": result, "paths": write_report(result, bench_config.out)}


def _stream(config: DemoConfig, model: str, video: Path) -> dict[str, Any]:
    from bench.streaming import stream_fps

    overlay = config.out / "overlay.mp4"
    stats = stream_fps(video, Path(model), "cpu", overlay)
    strip = overlay_strip(overlay, config.out / "overlay_strip.png")
    return {**stats, "video": str(overlay), "strip": str(strip)}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())
