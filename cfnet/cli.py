"""The `cfnet` command: one face wiring every package's commands.

Each package keeps its commands in its own `cli.py`; heavy imports (torch, onnxruntime) happen inside
the commands, so `cfnet stream --help` never loads torch.
"""

from __future__ import annotations

import sys
import traceback

import click

from cfnet.errors import UserError
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


# --- commands of the other packages ---
from bench.cli import bench_command, demo_command  # noqa: E402

cli.add_command(bench_command)
cli.add_command(demo_command)
