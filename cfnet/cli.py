"""The `cfnet` command: one face wiring every package's commands.

Each package keeps its commands in its own `cli.py`; heavy imports (torch, onnxruntime) happen inside
the commands, so `cfnet stream --help` never loads torch.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from cfnet.errors import UserError
from cfnet.sizes import SIZE
from runtime.errors import UserError as RuntimeUserError
from runtime.errors import write_failure
from runtime.options import NON_NEGATIVE, SEED, positive

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="cfnet")
@click.option("--verbose", is_flag=True, help="Show the traceback of expected errors too.")
def cli(verbose: bool) -> None:
    """ContraFusionNet segmentation: train, export, serve and benchmark.

    \b
    Example:
      cfnet demo --out demo
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected failures print `error: <what> (<where>)` and exit 2."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: docs/DESIGN.md
    from cfnet.atomic import sweep_stale_with

    sweep_stale_with(_remove_stale_parts)  # temp files of killed runs go, whichever package wrote them
    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)  # after `--` every word is an argument, as typed
    verbose = "--verbose" in args[:end]
    args = [a for a in args[:end] if a != "--verbose"] + args[end:]
    try:
        code = cli.main(args=args, prog_name="cfnet", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `cfnet export`: the group's usage, as click prints it
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:
        if verbose:
            traceback.print_exc()
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "cfnet"
        print(f"error: {exc.format_message()} ({where} --help)", file=sys.stderr)
        sys.exit(2)
    except (UserError, RuntimeUserError) as exc:
        if verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:  # an output that cannot be written, wherever the command wrote it
        line = write_failure(exc)
        if line is None:
            raise
        if verbose:
            traceback.print_exc()
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


def _remove_stale_parts(folder: Path) -> None:
    """`runtime.files.remove_stale_parts`, imported when first needed (it loads OpenCV)."""
    from runtime.files import remove_stale_parts

    remove_stale_parts(folder)


# --- commands of cfnet (models, data, train, evaluate) ---


@cli.command("models")
@click.option("--model", "model_name", metavar="NAME", help="Only this model (default: every model of the zoo).")
@click.option("--preset", help="Only this preset (default: tiny and paper; every preset with --model).")
@click.option("--size", type=SIZE, default="512x512", show_default=True, help="Input size of the GFLOPs, HxW.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list on stdout.")
def models_command(model_name: str | None, preset: str | None, size: tuple[int, int], as_json: bool) -> None:
    """List the model zoo: parameters (M), GFLOPs of one image at --size, size divisor.

    GFLOPs are counted by torch.utils.flop_counter (a multiply-add is 2 FLOPs; convolutions and matrix
    products only) on the meta device, so nothing is computed. Inputs are padded to a multiple of the
    size divisor by export and runtime (1: any size), and so are they here (marked *).

    \b
    Example:
      cfnet models
      cfnet models --model hrnet --size 1024x2048
      cfnet models --preset paper --json
    """
    import dataclasses
    import json

    from cfnet.models import MODEL_NAMES, presets
    from cfnet.models.profile import ModelProfile, profile

    names = [model_name] if model_name is not None else list(MODEL_NAMES)
    rows: list[ModelProfile] = []
    for name in names:
        available = presets(name)
        if preset is not None:
            wanted: tuple[str, ...] = (preset,) if model_name is not None or preset in available else ()
        else:
            wanted = available if model_name is not None else tuple(p for p in ("tiny", "paper") if p in available)
        rows.extend(profile(name, p, size) for p in wanted)
    if not rows:
        raise UserError(f"no model has preset '{preset}'", "cfnet models --model NAME lists a model's presets")
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
        return
    flops = f"GFLOPs @{size[0]}x{size[1]}"
    click.echo(f"{'model':<14} {'preset':<7} {'params (M)':>10} {flops:>18} {'size divisor':>12}")
    for row in rows:
        gflops = f"{row.gflops:.1f}" + ("*" if row.input_size != row.size else " ")
        click.echo(f"{row.name:<14} {row.preset:<7} {row.params_m:>10.2f} {gflops:>19} {row.size_divisor:>12}")
    if any(row.input_size != row.size for row in rows):
        click.echo(f"* at {size[0]}x{size[1]} padded to a multiple of the size divisor, as export and runtime feed it")


@cli.group("data")
def data_group() -> None:
    """Datasets in the Cityscapes layout.

    \b
    Example:
      cfnet data synth data/synth
    """


@data_group.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--train", "train_count", default=200, show_default=True, help="Training images.")
@click.option("--val", "val_count", default=50, show_default=True, help="Validation images.")
@click.option("--size", type=SIZE, default="256x512", show_default=True, help="Image size, HxW.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed: the same seed writes identical bytes.")
@click.option("--overwrite", is_flag=True,
              help="Replace the data set in OUT (a folder holding anything else is refused, never deleted).")
@click.option("--video", type=click.Path(dir_okay=False), help="Also write a driving video (.mp4) here.")
@click.option("--frames", default=150, show_default=True, help="Frames of --video (0.7 m of travel each).")
@click.option("--fps", default=15.0, show_default=True, type=positive(1000), help="Frame rate of --video.")
@click.option("--video-labels", type=click.Path(file_okay=False),
              help="Also write each --video frame's labelIds PNG into this folder (for `evaluate --video`).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
def data_synth_command(
    out: str, train_count: int, val_count: int, size: tuple[int, int], seed: int, overwrite: bool,
    video: str | None, frames: int, fps: float, video_labels: str | None, as_json: bool,
) -> None:
    """Write procedural urban street scenes in the Cityscapes layout (and optionally a driving video).

    OUT gets leftImg8bit/{train,val}/{city}/{city}_{seq}_{frame}_leftImg8bit.png and
    gtFine/.../*_gtFine_labelIds.png (labelIds) plus *_gtFine_color.png; 17 of the 19 classes appear.
    --train 0 --val 0 writes only the video. --video-labels writes the video's ground truth, one
    `{video}_000000_{frame}_gtFine_labelIds.png` per frame. Files are written to a temporary name, then renamed.

    \b
    Example:
      cfnet data synth data/synth
      cfnet data synth data/small --train 20 --val 5 --size 128x256 --seed 1
      cfnet data synth data/synth --overwrite --video data/drive.mp4 --frames 300
      cfnet data synth data/synth --train 0 --val 0 --video data/drive.mp4 --video-labels data/drive-labels
    """
    import json
    import time

    from cfnet.data.synth import synthesize, synthesize_video
    from runtime.files import Output, check_outputs

    if video_labels is not None and video is None:
        raise click.UsageError("--video-labels needs --video")
    check_outputs([Output(out, "OUT", folder=True) if train_count or val_count or video is None else None,
                   Output(video, "--video", suffixes=(".mp4",)) if video is not None else None])
    start = time.perf_counter()
    result: dict[str, object] = {"train": train_count, "val": val_count, "size": list(size), "seed": seed}
    if train_count or val_count or video is None:
        result["data"] = str(synthesize(out, train_count, val_count, size, seed, overwrite=overwrite))
    if video is not None:
        result["video"] = str(synthesize_video(video, frames, size, seed, fps, video_labels, overwrite))
        result["frames"] = frames
        if video_labels is not None:
            result["video_labels"] = video_labels
    result["seconds"] = round(time.perf_counter() - start, 2)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if "data" in result:
        click.echo(f"data: {result['data']} ({train_count} train, {val_count} val, {size[0]}x{size[1]})")
    if "video" in result:
        click.echo(f"video: {result['video']} ({frames} frames)")
    if video_labels is not None:
        click.echo(f"video labels: {video_labels}")


@data_group.command("check")
@click.argument("data", type=click.Path())
@click.option("--split", "splits", multiple=True, default=("train", "val"), show_default=True,
              help="Split to check (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON on stdout.")
def data_check_command(data: str, splits: tuple[str, ...], as_json: bool) -> None:
    """Validate a Cityscapes-layout folder and count it: images, cities, sizes, class pixel shares.

    Checks what training checks when it scans a split: every image has a label, sizes match, PNGs are
    readable and complete, label ids are in the Cityscapes table. The first problem is reported with
    the file it concerns (exit 2).

    \b
    Example:
      cfnet data check data/synth
      cfnet data check /datasets/cityscapes --split val --json
    """
    import json

    from cfnet.data.cityscapes import describe

    reports = [describe(data, split) for split in splits]
    if as_json:
        click.echo(json.dumps(reports, indent=2))
        return
    for r in reports:
        click.echo(f"{r['split']}: {r['images']} images, cities {', '.join(r['cities'])}, "  # type: ignore[arg-type]
                   f"sizes {', '.join(r['sizes'])}, ignored {r['ignored']:.1%}")  # type: ignore[arg-type]
        shares = r["classes"]
        assert isinstance(shares, dict)
        click.echo("  " + ", ".join(f"{name} {share:.1%}" for name, share in shares.items()))


@cli.command("train")
@click.option("--model", "model_name", metavar="NAME", help="Zoo model to train (see `cfnet models`).")
@click.option("--preset", default="paper", show_default=True, help="Model preset (`tiny` for tests and demos).")
@click.option("--data", type=click.Path(file_okay=False), help="Dataset root in the Cityscapes layout.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, logs).")
@click.option("--epochs", type=int, help="Length of the run in epochs.")
@click.option("--iters", type=int, help="Length of the run in iterations (wins over --epochs).")
@click.option("--batch-size", default=1, show_default=True, help="Images per process and iteration.")
@click.option("--crop", type=SIZE, default="512x512", show_default=True, help="Training crop, HxW.")
@click.option("--lr", default=1e-4, show_default=True, type=positive(), help="Adam learning rate (the paper's 1e-4).")
@click.option("--poly", is_flag=True, help="Poly learning-rate decay (power 0.9) to 0 at the last iteration.")
@click.option("--nproc", default=1, show_default=True, help="Processes on this machine (DDP; one per GPU).")
@click.option("--amp", is_flag=True, help="Mixed precision on CUDA (ignored with a warning on the CPU).")
@click.option("--amp-dtype", type=click.Choice(["fp16", "bf16"]), default="fp16", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt, exactly.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of weights, data order and augmentation.")
@click.option("--backbone-weights", type=click.Path(),
              help="Pretrained encoder weights: a torchvision ResNet-50 state dict (pspnet, deeplabv3) or a "
                   "transformers MiT save, folder or file (segformer, cfnet-*).")
@click.option("--val-every", default=0, show_default=True, help="Iterations between validations (0: each epoch).")
@click.option("--save-every", default=0, show_default=True, help="Iterations between checkpoints (0: each epoch).")
@click.option("--keep-checkpoints", default=3, show_default=True,
              help="Numbered checkpoints (iter_N.pt) kept, the newest; best.pt and last.pt always (0: keep all).")
@click.option("--log-every", default=10, show_default=True, help="Iterations between rows of metrics.csv.")
@click.option("--workers", default=2, show_default=True, help="DataLoader worker processes per training process.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--loss-contrastive", default=0.1, show_default=True, type=NON_NEGATIVE,
              help="InfoNCE weight (fused models; 0: off).")
@click.option("--temperature", default=0.07, show_default=True, type=positive(), help="InfoNCE temperature tau.")
@click.option("--aux-weight", type=NON_NEGATIVE, show_default="0.4, measured: docs/DESIGN.md",
              help="Weight of the fused models' auxiliary transformer-branch loss (0: no branch decoder).")
@click.pass_context
def train_command(ctx: click.Context, model_name: str | None, data: str | None, **options: object) -> None:
    """Train a model: Adam, CE + Dice (+ InfoNCE for the fused models), checkpoints and curves in --out.

    Writes last.pt, best.pt (by val mIoU), iter_N.pt (the last --keep-checkpoints), metrics.csv and
    curves.png in --out. With --nproc N (or under torchrun) the processes train with DDP and SyncBatchNorm;
    --batch-size is per process. With --resume the run's saved options are used; only --data, --iters,
    --epochs, --workers, --device, --nproc, --val-every, --save-every, --keep-checkpoints and --log-every
    given on the command line change them.

    \b
    Example:
      cfnet data synth data/synth
      cfnet train --model cfnet-pspnet --preset tiny --data data/synth --out runs/tiny \\
          --iters 600 --crop 128x256 --lr 1e-3 --poly --workers 0
      cfnet train --out runs/tiny --resume
      torchrun --nproc-per-node 2 $(which cfnet) train --model cfnet-pspnet --data cityscapes --out runs/cs
    """
    from cfnet.train import TrainConfig, train
    from cfnet.train.config import resumed_config
    from runtime.files import Output, check_outputs

    check_outputs([Output(str(options["out"]), "--out", folder=True)])

    if options["resume"]:
        given = {
            name: value
            for name, value in {**options, "data": data}.items()
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        }
        config = resumed_config(str(options["out"]), given)
    else:
        if model_name is None or data is None:
            raise click.UsageError("--model and --data are required (unless --resume)", ctx)
        fields = {k: v for k, v in options.items() if k != "resume" and v is not None}  # None: TrainConfig's default
        config = TrainConfig(model=model_name, data=data, **fields)  # type: ignore[arg-type]
    if ctx.get_parameter_source("crop") == click.core.ParameterSource.COMMANDLINE:
        _check_crop(config.data, config.crop)
    path = train(config, resume=bool(options["resume"]))
    if os.environ.get("RANK", "0") == "0":  # under torchrun every rank runs this command; one reports
        click.echo(f"checkpoint: {path}")


@cli.command("evaluate")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Checkpoint (.pt) to score.")
@click.option("--data", type=click.Path(file_okay=False), help="Dataset root, Cityscapes layout.")
@click.option("--split", default="val", show_default=True, help="Split to score.")
@click.option("--model", "expect_model", metavar="NAME|MODEL",
              help="With --checkpoint: refuse a checkpoint of any other zoo model. With --video: the model to run "
                   "(.onnx, .engine or grpc://HOST:PORT/NAME).")
@click.option("--save-predictions", type=click.Path(file_okay=False), help="Folder for labelId result PNGs.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--branch", type=click.Choice(["transformer"]),
              help="Score only this branch of a fused checkpoint (its MiT encoder and auxiliary decoder).")
@click.option("--video", type=click.Path(dir_okay=False),
              help="Score a deployed model (--model) on this video instead: mIoU and flicker over its frames.")
@click.option("--labels", type=click.Path(file_okay=False),
              help="With --video: its per-frame *_gtFine_labelIds.png (`cfnet data synth --video-labels`).")
@click.option("--smooth", multiple=True, metavar="flow|ema:A|hold:D|vote:K",
              help="With --video: also score this temporal smoothing (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as one JSON object on stdout.")
def evaluate_command(
    checkpoint: str | None, data: str | None, split: str, expect_model: str | None, save_predictions: str | None,
    device: str, branch: str | None, video: str | None, labels: str | None, smooth: tuple[str, ...], as_json: bool,
) -> None:
    """Score a checkpoint on a split: one confusion matrix; mIoU, mean Dice, pixel accuracy, per-class IoU.

    --save-predictions writes `{city}_{seq}_{frame}_leftImg8bit.png` labelId PNGs, the result format of
    the cityscapesScripts evaluator. With --video, a deployed model is scored on a labelled video instead:
    mIoU over every frame and flicker (the share of pixels whose predicted label changes between
    consecutive frames where the ground truth does not), unsmoothed and with each --smooth.

    \b
    Example:
      cfnet evaluate --checkpoint runs/tiny/best.pt --data data/synth --json
      cfnet evaluate --checkpoint runs/tiny/best.pt --data data/synth --branch transformer
      cfnet evaluate --video data/drive.mp4 --labels data/drive-labels --model model.onnx \\
          --smooth ema:0.5 --smooth hold:0.15 --smooth vote:5
    """
    import json

    if video is not None:
        from bench.video import evaluate_video, format_video_scores

        if labels is None or expect_model is None:
            raise click.UsageError("--video needs --labels DIR and --model MODEL")
        report = evaluate_video(
            expect_model, video, labels, smooth=smooth, device=device,
            log=None if as_json else lambda line: click.echo(line, err=True),
        )
        click.echo(json.dumps(report, indent=2) if as_json else format_video_scores(report))
        return
    if checkpoint is None or data is None:
        raise click.UsageError("--checkpoint and --data are required (or --video, --labels and --model)")
    if labels is not None or smooth:
        raise click.UsageError("--labels and --smooth go with --video")
    from cfnet.evaluate import evaluate_checkpoint, format_scores

    if save_predictions is not None:
        from cfnet.data.cityscapes import scan
        from runtime.files import Output, check_outputs

        samples = scan(data, split)  # a prediction is named like its image: never written over an input
        check_outputs(
            [Output(save_predictions, "--save-predictions", folder=True),
             *(Output(os.path.join(save_predictions, s.result_name), "--save-predictions") for s in samples)],
            [checkpoint, *(path for s in samples for path in (s.image, s.label))],
        )
    scores = evaluate_checkpoint(
        checkpoint, data, split=split, expect_model=expect_model, save_predictions=save_predictions,
        device=device, progress=not as_json, branch=branch,
    )
    click.echo(json.dumps(scores, indent=2) if as_json else format_scores(scores))


@cli.command("ablate")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Dataset root, Cityscapes layout.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder of the runs and the report.")
@click.option("--preset", default="tiny", show_default=True, help="Model preset of every variant.")
@click.option("--iters", type=int, help="Iterations per run [default: 400; --quick: 200].")
@click.option("--seeds", type=int, help="Seeds per variant [default: 2; --quick: 1].")
@click.option("--variants", help="Comma-separated variants [default: all]; their references are added.")
@click.option("--quick", is_flag=True, help="One seed and a shorter schedule.")
@click.option("--batch-size", type=int, help="Images per iteration [default: 4].")
@click.option("--crop", type=SIZE, help="Training crop HxW [default: 128x256, the demo set's size].")
@click.option("--aux-weight", type=NON_NEGATIVE, help="Auxiliary transformer-branch loss weight [default: train's].")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Training device [default: cpu].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def ablate_command(
    data: str, out: str, variants: str | None, quick: bool, as_json: bool, **given: object
) -> None:
    """Train the paper's ablations with one schedule and seed set, and report them beside its claims.

    Variants: full (cfnet-pspnet), no-contrastive, segformer, pspnet, tau-0.03/0.1/0.2/0.5 (full is tau
    0.07), hrnet-full, hrnet-no-contrastive. Each run is an ordinary run folder, OUT/runs/VARIANT/seed-N
    (`cfnet train --resume` works on it); a rerun skips finished runs and resumes interrupted ones.
    Writes OUT/ablations.md, .json, .csv and .png: mIoU, mean Dice, pixel accuracy per variant (mean and
    spread over seeds), the change against the reference, the paper's claim and whether the data agrees;
    the full model's transformer branch is scored beside segformer. Ctrl-C or SIGTERM writes the report
    so far (exit 130); the interrupted run resumes from its last checkpoint on the next invocation.

    \b
    Example:
      cfnet data synth data/demo --train 120 --val 30 --size 128x256
      cfnet ablate --data data/demo --out ablations --quick
      cfnet ablate --data data/demo --out ablations --variants no-contrastive,segformer --seeds 1 --iters 50
    """
    import json
    import time

    from cfnet.ablation.plan import QUICK, Schedule, build_plan, select
    from cfnet.ablation.report import collect, write_report
    from cfnet.ablation.runner import execute
    from runtime.files import Output, check_outputs
    from runtime.signals import sigterm_as_interrupt

    check_outputs([Output(out, "--out", folder=True)])

    options = {**(QUICK if quick else {}), **{k: v for k, v in given.items() if v is not None}}
    schedule = Schedule(data=data, out=out, **options)  # type: ignore[arg-type]
    plan = build_plan(schedule, select(variants))
    _check_plan(plan, data)
    started = time.perf_counter()
    failed = True
    try:
        with sigterm_as_interrupt():  # SIGTERM ends the plan like Ctrl-C
            execute(plan, progress=not as_json)
        failed = False
    finally:  # an interrupted plan still leaves the report of what finished
        report = collect(plan, schedule, seconds=time.perf_counter() - started)
        try:
            paths = write_report(report, out)
        except OSError:
            if not failed:
                raise  # else the plan's own failure (a full disk, say) is the one reported
    click.echo(json.dumps(report, indent=2) if as_json else "\n".join(f"wrote {p}" for p in paths))


def _check_crop(data: str, crop: tuple[int, int]) -> None:
    """A crop larger than the training images at any scale is refused before a run folder is made (train: a
    crop given on the command line; the default, the paper's 512x512, pads small images as it always did)."""
    from cfnet.data.cityscapes import png_size, scan
    from cfnet.data.transforms import check_crop

    check_crop(crop, (png_size(sample.image) for sample in scan(data, "train")))


def _check_plan(plan: list[Any], data: str) -> None:
    """What would fail only at a run's start, checked before the first: the splits, every run's preset and crop."""
    from cfnet.data.cityscapes import scan
    from cfnet.models.registry import presets

    scan(data, "train")
    for crop in {run.config.crop for run in plan}:
        _check_crop(data, crop)
    scan(data, "val")
    for run in plan:
        offered = presets(run.config.model)
        if run.config.preset not in offered:
            raise UserError(
                f"unknown preset '{run.config.preset}' for {run.config.model}", f"--preset: {', '.join(offered)}"
            )


# --- commands of the other packages ---
from export.cli import build_engine_command, export_group  # noqa: E402

cli.add_command(export_group)
cli.add_command(build_engine_command)
from bench.cli import bench_command, demo_command  # noqa: E402

cli.add_command(bench_command)
cli.add_command(demo_command)
from runtime.cli import segment_command, serve_command, stream_command  # noqa: E402

cli.add_command(segment_command)
cli.add_command(stream_command)
cli.add_command(serve_command)
