"""The `cfnet bench` and `cfnet demo` commands (attached to the `cfnet` group by `cfnet/cli.py`)."""

from __future__ import annotations

from pathlib import Path

import click

from cfnet.sizes import SIZE
from runtime.cli import thread_count

ALL_MODELS = "unet,deeplabv3,pspnet,hrnet,segformer,cfnet-pspnet,cfnet-hrnet"
ALL_BACKENDS = (
    "torch,torch-fp16,onnxruntime,onnxruntime-int8,onnxruntime-int8-auto,onnxruntime-fp16,tensorrt,onnxruntime+mask,"
    "tensorrt+mask"
)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _default_backends(quick: bool, device: str) -> tuple[str, ...]:
    """Every backend; `--quick` leaves out the int8 autopilot (its search re-quantises several times) and, on a
    CPU, fp16 (a GPU precision: the CPU has few fp16 kernels)."""
    names = tuple(b for b in _names(ALL_BACKENDS) if not quick or b != "onnxruntime-int8-auto")
    fp16 = ("onnxruntime-fp16", "torch-fp16")
    return tuple(b for b in names if b not in fp16) if quick and device == "cpu" else names


@click.command("bench")
@click.option("--models", default=None, help=f"Comma-separated models [default: {ALL_MODELS}; --quick: a subset].")
@click.option("--preset", default="paper", show_default=True, help="Model preset (paper, tiny, ...).")
@click.option("--size", type=SIZE, default="512x512", show_default=True, help="Input size HxW.")
@click.option("--backends", default=None,
              help=f"Comma-separated backends [default: {ALL_BACKENDS}; --quick: without onnxruntime-int8-auto, "
                   "and on cpu without the fp16 ones]; add triton to serve the model with a Triton server "
                   "(cfnet[serve]).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--warmup", type=int, default=None, help="Untimed rounds first [default: 3; --quick: 1].")
@click.option("--iters", type=int, default=None, help="Timed rounds [default: 20; --quick: 5].")
@click.option("--threads", type=click.IntRange(min=1), default=None, callback=thread_count,
              help="torch and ONNX Runtime intra-op threads [default: cores; at most 4 per core].")
@click.option("--checkpoints", type=click.Path(path_type=Path), default=None,
              help="Folder of trained checkpoints (<model>.pt or <model>/best.pt) instead of random weights; needs "
                   "--data, and one checkpoint per model of --models.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Cityscapes-layout folder: each backend's mIoU and argmax agreement with PyTorch.")
@click.option("--split", default="val", show_default=True, help="Split of --data to score.")
@click.option("--images", type=int, default=None, help="Score only the first N images of the split.")
@click.option("--stream", type=click.Path(path_type=Path), default=None,
              help="Video: end-to-end stream FPS against backend-only FPS per backend.")
@click.option("--streams", type=int, default=1, show_default=True,
              help="With --stream: K copies through one pipeline against K sequential runs and K processes.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-report"), show_default=True,
              help="Report folder (report.md, results.csv/json, charts; exported models under cache/).")
@click.option("--markdown", type=click.Path(path_type=Path), default=None,
              help="Also write the Markdown report to this file (charts copied beside it), e.g. docs/BENCHMARKS.md.")
@click.option("--quick", is_flag=True, help="A subset of models and fewer rounds (what `make bench` runs).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of the Markdown table.")
def bench_command(
    models: str | None,
    preset: str,
    size: tuple[int, int],
    backends: str | None,
    device: str,
    warmup: int | None,
    iters: int | None,
    threads: int | None,
    checkpoints: Path | None,
    data: Path | None,
    split: str,
    images: int | None,
    stream: Path | None,
    streams: int,
    out: Path,
    markdown: Path | None,
    quick: bool,
    as_json: bool,
) -> None:
    """Measure latency, throughput and accuracy of every model on every backend, beside the paper's table.

    A fused model's transformer branch alone (MiT + auxiliary decoder) is named `cfnet-pspnet:transformer`.
    Per model: parameters and GFLOPs; per backend: median and p90 latency, images/s, speed-up over PyTorch
    eager and GFLOP/s, the end-to-end frame cost (preprocess + backend + postprocess to the frame's mask) and
    the bytes the model returns per frame (`NAME+mask`: the export with the argmax in the graph),
    backends interleaved round by round after a warm-up. A backend that cannot run here
    stays in the table with the reason. Writes report.md, results.csv, results.json and latency.png
    (accuracy.png with --data) into --out.

    \b
    Example:
      cfnet bench --quick --out bench-report
      cfnet bench --models cfnet-pspnet,segformer --backends torch,onnxruntime,onnxruntime-int8 --iters 10
      cfnet bench --models cfnet-pspnet,segformer --preset tiny --checkpoints demo/checkpoints \\
          --data demo/data --stream demo/video.mp4 --size 128x256
      cfnet bench --models cfnet-pspnet --preset tiny --backends onnxruntime --stream drive.mp4 --streams 4
      cfnet bench --models hrnet --preset tiny --size 512x1024 --backends onnxruntime,onnxruntime+mask
      cfnet bench --preset tiny --models cfnet-pspnet,cfnet-pspnet:transformer --backends torch,onnxruntime
    """
    import json

    from bench.report import markdown_table, write_report
    from bench.run import QUICK_MODELS, BenchConfig, run_bench
    from runtime.files import Output, check_outputs

    check_outputs(
        [Output(out, folder=True), Output(markdown, "--markdown", suffixes=(".md",)) if markdown else None], [stream]
    )

    chosen = _names(models) if models is not None else (QUICK_MODELS if quick else _names(ALL_MODELS))
    config = BenchConfig(
        models=chosen,
        preset=preset,
        size=size,
        backends=_names(backends) if backends is not None else _default_backends(quick, device),
        device=device,
        warmup=warmup if warmup is not None else (1 if quick else 3),
        iters=iters if iters is not None else (5 if quick else 20),
        threads=threads,
        checkpoints=checkpoints,
        data=data,
        split=split,
        images=images,
        stream=stream,
        streams=streams,
        out=out,
    )
    result = run_bench(config)
    paths = write_report(result, out, markdown)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(markdown_table(result["rows"]))
        click.echo(f"\nreport: {paths['markdown']}", err=True)


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo"), show_default=True,
              help="Folder for everything the demo makes; REPORT.md is its summary. New, empty, or made by the "
                   "demo (a rerun replaces the demo's outputs).")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty folder the demo did not make: only the demo's own files are replaced, "
                   "nothing else is deleted.")
@click.option("--train-iters", type=int, default=None, hidden=True, help="Training iterations per model.")
@click.option("--images", type=int, default=None, hidden=True, help="Synthetic training images.")
@click.option("--size", type=SIZE, default=None, hidden=True, help="Synthetic image size HxW.")
@click.option("--frames", type=int, default=None, hidden=True, help="Frames of the synthetic video.")
@click.option("--bench-iters", type=int, default=None, hidden=True, help="Timed bench rounds.")
def demo_command(
    out: Path,
    overwrite: bool,
    train_iters: int | None,
    images: int | None,
    size: tuple[int, int] | None,
    frames: int | None,
    bench_iters: int | None,
) -> None:
    """Run the whole chain on built-in synthetic data, in about 8 minutes on 2 CPU cores.

    Synthesises a Cityscapes-layout data set and a driving video, trains a tiny cfnet-pspnet and a tiny
    SegFormer baseline the same way, evaluates both, exports fp32, fp16 and int8 ONNX (parity printed),
    benchmarks every backend, streams the video to an overlay MP4 and writes OUT/REPORT.md.

    \b
    Example:
      cfnet demo --out demo
    """
    from bench.demo import DemoConfig, run_demo
    from runtime.files import Output, check_outputs

    check_outputs([Output(out, folder=True)])

    config = DemoConfig(out=out)
    if train_iters is not None:
        config.train_iters = train_iters
    if images is not None:
        config.train_images = images
        config.val_images = max(2, images // 4)
    if size is not None:
        config.size = size
    if frames is not None:
        config.frames = frames
    if bench_iters is not None:
        config.bench_iters = bench_iters
    run_demo(config, echo=lambda line: click.echo(line, err=True), overwrite=overwrite)
