"""`cfnet export onnx` and `cfnet build-engine` (attached to the `cfnet` group by `cfnet/cli.py`)."""

from __future__ import annotations

from pathlib import Path

import click

from cfnet.sizes import SHAPE, SIZE
from runtime.options import Float, positive

ENGINE_SUFFIXES = (".engine", ".plan")


@click.group("export")
def export_group() -> None:
    """Export models for deployment.

    \b
    Example:
      cfnet export onnx --model cfnet-pspnet --out cfnet-pspnet.onnx --size 512x1024
    """


@export_group.command("onnx")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Trained checkpoint (.pt) to export.")
@click.option("--model", "model_name", metavar="NAME", help="Zoo model (random weights without --checkpoint).")
@click.option("--preset", default=None, help="Model preset with --model alone [default: paper].")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output ONNX file.")
@click.option("--size", type=SIZE, default="512x1024", show_default=True, help="Export size HxW (the runtime's box).")
@click.option("--batch", default=1, show_default=True, help="Batch size of the traced example.")
@click.option("--static", is_flag=True, help="Fixed batch, H and W instead of dynamic axes.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset (>= 17).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True)
@click.option(
    "--calib-data", type=click.Path(file_okay=False), help="Image folder: int8 calibration, parity, fp16 check."
)
@click.option(
    "--calib-images", default=32, show_default=True, type=click.IntRange(min=1), help="Images of --calib-data to use."
)
@click.option(
    "--calib-method",
    type=click.Choice(["minmax", "percentile", "entropy"]),
    default="minmax",
    show_default=True,
    help="int8 calibration (streamed over the images in chunks).",
)
@click.option(
    "--int8-target",
    type=click.Choice(["cpu", "cpu-vnni", "tensorrt"]),
    default="cpu",
    show_default=True,
    help="int8 for ONNX Runtime on any x86 CPU (uint8 activations and weights: exact sums everywhere), on CPUs "
    "with VNNI/AMX (int8 weights: faster there) or for TensorRT (symmetric int8).",
)
@click.option(
    "--min-agreement",
    type=Float(0, 1, min_open=True),
    help="int8 autopilot: keep the most sensitive nodes fp32 until argmax agreement with fp32 on held-out "
    "--calib-data images reaches this (e.g. 0.995).",
)
@click.option("--holdout-images", default=8, show_default=True, help="Held-out images of --calib-data (autopilot).")
@click.option("--output", type=click.Choice(["logits", "mask", "both"]), default="logits", show_default=True,
              help="Graph outputs: logits (N x C x H x W float32), mask (N x H x W uint8 argmax in the graph), both.")
@click.option("--branch", type=click.Choice(["transformer"]),
              help="Only this branch of a fused checkpoint (its MiT encoder and auxiliary decoder).")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON on stdout.")
def onnx_command(
    checkpoint: str | None,
    model_name: str | None,
    preset: str | None,
    out: str,
    size: tuple[int, int],
    batch: int,
    static: bool,
    opset: int,
    no_simplify: bool,
    precision: str,
    calib_data: str | None,
    calib_images: int,
    calib_method: str,
    int8_target: str,
    min_agreement: float | None,
    holdout_images: int,
    output: str,
    branch: str | None,
    as_json: bool,
) -> None:
    """Export a model to ONNX: input `images` (N x 3 x H x W), output `logits`, cfnet metadata.

    After every export ONNX Runtime (CPU) is compared with PyTorch on random inputs (and on --calib-data
    images): max |Δ|, relative error, argmax agreement. An fp32 graph below 99.99% agreement or above 1e-4
    relative error is refused (exit 1, nothing written). fp16: convolutions and matrix products in fp16,
    normalisation, softmax, reductions and resizing in fp32 (for TensorRT 11's strongly typed builds).
    int8: static QDQ quantisation calibrated on --calib-data, per-channel weights, for --int8-target.
    With --min-agreement the autopilot keeps the fewest most sensitive nodes in fp32 that reach that argmax
    agreement with fp32 on held-out images (not calibration ones); a target it cannot reach writes the best
    model found and exits 1.
    --output mask appends ArgMax over the classes and a cast to uint8: the graph returns `mask` (N x H x W,
    1 byte a pixel instead of 4 x 19), checked to equal PyTorch's argmax wherever its two largest logits
    differ by more than 1e-3; the metadata's `cfnet.outputs` lists the outputs.
    --branch transformer exports a fused checkpoint's transformer branch alone (segformer's graph and
    size, metadata cfnet.branch), compared with that branch's output in PyTorch.

    \b
    Example:
      cfnet export onnx --model segformer --preset tiny --out segformer.onnx --size 256x512
      cfnet export onnx --checkpoint runs/cfnet/best.pt --out cfnet.onnx --size 512x1024
      cfnet export onnx --checkpoint best.pt --out cfnet-int8.onnx --precision int8 --calib-data data/synth
      cfnet export onnx --model segformer --preset tiny --out segformer-mask.onnx --size 256x512 --output mask
      cfnet export onnx --checkpoint runs/cfnet/best.pt --branch transformer --out branch.onnx --size 512x1024
      cfnet export onnx --checkpoint best.pt --out cfnet-int8.onnx --precision int8 --calib-data data/synth \\
          --min-agreement 0.995 --calib-method percentile --int8-target tensorrt
    """
    import json
    import sys

    from export.onnx import ParityError, export_report
    from runtime.files import Output, check_outputs

    check_outputs([Output(out, suffixes=(".onnx",))], [checkpoint])
    model = _load_model(checkpoint, model_name, preset, branch)
    try:
        report = export_report(
            model,
            out,
            size=size,
            dynamic=not static,
            simplify=not no_simplify,
            precision=precision,
            calib_images=calib_data,
            opset=opset,
            batch=batch,
            calib_count=calib_images,
            output=output,
            calib_method=calib_method,
            int8_target=int8_target,
            min_agreement=min_agreement,
            heldout_count=holdout_images,
        )
    except ParityError as exc:
        print(f"error: {exc} ({out} not written)", file=sys.stderr)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    plan = report.precision_plan
    if plan.get("reached") is False:
        print(
            f"error: int8 agreement target {100 * plan['target']:.2f}% not reached: best held-out agreement "
            f"{100 * plan['agreement']:.3f}% with {len(plan['fp32_nodes'])} nodes fp32 ({out} holds that model)",
            file=sys.stderr,
        )
        sys.exit(1)


def _load_model(  # noqa: ANN202 - a torch model
    checkpoint: str | None, model_name: str | None, preset: str | None, branch: str | None
):
    from cfnet.errors import UserError

    if checkpoint is None and model_name is None:
        raise UserError("give --checkpoint or --model", "cfnet export onnx --help")
    if checkpoint is not None:
        if preset is not None:
            raise UserError("--preset comes from the checkpoint", "drop --preset or --checkpoint")
        from cfnet.checkpoint import load_model

        return load_model(checkpoint, expect_model=model_name, branch=branch)
    if branch is not None:
        raise UserError(f"--branch {branch} needs a trained --checkpoint", "random weights have no trained branch")
    from cfnet.models import build_model

    return build_model(str(model_name), preset=preset or "paper").eval()


@click.command("build-engine")
@click.argument("onnx_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Engine file (.engine); + .engine.json.")
@click.option("--fp16/--fp32", default=True, show_default=True, help="FP16 engine (normalisation kept in FP32).")
@click.option("--min-shape", type=SHAPE, help="Smallest input NxCxHxW [default: half the metadata size].")
@click.option("--opt-shape", type=SHAPE, help="Input NxCxHxW to tune for [default: 1x3x<cfnet.input_size>].")
@click.option("--max-shape", type=SHAPE, help="Largest input NxCxHxW [default: twice the metadata size].")
@click.option("--workspace-gb", default=4.0, show_default=True, type=positive(), help="Builder workspace limit, GB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Timing cache file, read and written.")
@click.option("--compat", type=click.Choice(["none", "hardware", "version"]), default="none", show_default=True,
              help="Portability: hardware = any Ampere-or-newer GPU (AMPERE_PLUS), version = later TensorRT versions "
                   "too (VERSION_COMPATIBLE); both may run slower than none (this GPU model and TensorRT only).")
@click.option("--json", "as_json", is_flag=True, help="Print the sidecar as JSON on stdout.")
def build_engine_command(
    onnx_path: str,
    out: str,
    fp16: bool,
    min_shape: tuple[int, int, int, int] | None,
    opt_shape: tuple[int, int, int, int] | None,
    max_shape: tuple[int, int, int, int] | None,
    workspace_gb: float,
    timing_cache: str | None,
    compat: str,
    as_json: bool,
) -> None:
    """Build a TensorRT engine from an ONNX file, with one optimisation profile and a JSON sidecar.

    TensorRT 10 builds an fp32 ONNX with the FP16 flag, normalisation, softmax and reductions pinned to
    FP32; TensorRT 11 (no FP16 flag) builds a strongly typed network from the mixed fp16 ONNX, made on
    the fly from an fp32 one. fp16 and int8 ONNX files build strongly typed on both. Needs an NVIDIA GPU.
    The sidecar records the TensorRT version, GPU, compute capability and --compat; the runtime refuses an
    engine that this machine cannot run, with the command that rebuilds it.

    \b
    Example:
      cfnet build-engine cfnet.onnx --out cfnet.engine
      cfnet build-engine cfnet.onnx --out cfnet.engine --min-shape 1x3x256x512 --opt-shape 1x3x512x1024 \\
          --max-shape 1x3x1024x2048 --timing-cache trt.cache
      cfnet build-engine cfnet.onnx --out cfnet.engine --compat hardware
    """

    from export.tensorrt import build_engine
    from runtime.artifact import sidecar_path
    from runtime.files import Output, check_outputs

    check_outputs(
        [Output(out, suffixes=ENGINE_SUFFIXES), Output(sidecar_path(Path(out)), "--out's sidecar"),
         Output(timing_cache, "--timing-cache") if timing_cache else None],
        [onnx_path],
    )

    engine = build_engine(
        onnx_path,
        out,
        fp16=fp16,
        min_shape=min_shape,
        opt_shape=opt_shape,
        max_shape=max_shape,
        workspace_gb=workspace_gb,
        timing_cache=timing_cache,
        compat=compat,
    )
    side = sidecar_path(engine)
    if as_json:
        click.echo(side.read_text())
    else:
        click.echo(f"wrote {engine} and {side}")


@export_group.command("triton")
@click.argument("model", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Model repository folder.")
@click.option("--name", default="cfnet", show_default=True, help="Name of the ensemble (frames -> mask).")
@click.option(
    "--backend",
    type=click.Choice(["onnxruntime", "tensorrt", "python"]),
    help="Runs the network [default: onnxruntime for .onnx, tensorrt for .engine].",
)
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="Where the network's instances run (gpu: ONNX Runtime with TensorRT FP16).")
@click.option("--max-batch", type=int, help="max_batch_size: frames per batched execution [default: the model's own "
              "(an engine's profile, a static ONNX's batch), else 8].")
@click.option("--instances", default=1, show_default=True, help="Instances of each model.")
@click.option("--queue-delay-us", default=2000, show_default=True, help="Dynamic batcher's max queue delay (µs).")
@click.option("--overwrite", is_flag=True, help="Replace models of the same names in the repository.")
def triton_command(
    model: str, out: str, name: str, backend: str | None, device: str, max_batch: int | None, instances: int,
    queue_delay_us: int, overwrite: bool,
) -> None:
    """Write a Triton Inference Server model repository: network, pre/post-processing, ensemble.

    OUT gets NAME (ensemble: uint8 BGR frames -> uint8 masks), NAME_preprocess and NAME_postprocess
    (Python backend, the runtime's own code, copied into the repository) and NAME_model (the network,
    dynamically batched). --backend python runs ONNX Runtime inside the Python backend, for servers
    that have only that backend (`cfnet serve`). Serve it with `cfnet serve OUT`.

    \b
    Example:
      cfnet export triton model.onnx --out triton-repo --backend python
      cfnet export triton model.onnx --out triton-repo --device gpu --max-batch 16 --overwrite
      cfnet export triton model.engine --out triton-repo
    """
    from export.triton import export_triton
    from runtime.artifact import sidecar_path
    from runtime.errors import writing
    from runtime.files import Output, check_outputs
    from runtime.triton.config import model_step

    models = (name, f"{name}_preprocess", model_step(name), f"{name}_postprocess")  # each replaced whole
    check_outputs(
        [Output(out, folder=True), *(Output(Path(out) / m, folder=True, replaced=True) for m in models)],
        [model, sidecar_path(Path(model))],
    )
    with writing(out):
        folders = export_triton(
            model, out, name=name, backend=backend, max_batch=max_batch, instances=instances,
            queue_delay_us=queue_delay_us, gpu=device == "gpu", overwrite=overwrite,
        )
    for folder in folders.values():
        click.echo(f"wrote {folder}")
