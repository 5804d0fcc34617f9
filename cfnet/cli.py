"""The `cfnet` command: one face wiring every package's commands.

Each package keeps its commands in its own `cli.py`; heavy imports (torch, onnxruntime) happen inside
the commands, so `cfnet stream --help` never loads torch.
"""

from __future__ import annotations

import sys
import traceback

import click

from cfnet.errors import UserError
from cfnet.sizes import SIZE
from runtime.errors import UserError as RuntimeUserError

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
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args
    args = [a for a in args if a != "--verbose"]
    try:
        code = cli.main(args=args, prog_name="cfnet", standalone_mode=False)
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
    sys.exit(code if isinstance(code, int) else 0)


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
    size divisor by export and runtime (1: any size).

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
        click.echo(f"{row.name:<14} {row.preset:<7} {row.params_m:>10.2f} {row.gflops:>18.1f} {row.size_divisor:>12}")


# --- commands of the other packages ---
from bench.cli import bench_command, demo_command  # noqa: E402

cli.add_command(bench_command)
cli.add_command(demo_command)
from runtime.cli import segment_command, stream_command  # noqa: E402

cli.add_command(segment_command)
cli.add_command(stream_command)
