"""`cfnet stream`'s options for cameras that run for months (issue 23: reconnection, sources files, segments,
retention, JSON logs), their checks and its exit status; SIGTERM caught from the moment the command parses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runtime.options import positive


class SignalsFirst(click.Command):
    """A command that ends on SIGTERM as on Ctrl-C (exit 130) from the moment its options are parsed: parsing
    runs option callbacks that import OpenCV and ONNX Runtime (~0.4 s on a loaded box), and a SIGTERM there
    used to end the process with 143."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        from runtime.signals import sigterm_as_interrupt

        handled = contextlib.ExitStack()
        handled.enter_context(sigterm_as_interrupt())
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except BaseException:
            handled.close()
            raise
        ctx.call_on_close(handled.close)
        return ctx


def camera_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`cfnet stream`'s options for cameras that run for months."""
    options = [
        click.option(
            "--sources",
            "sources_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="File of sources, one a line: SOURCE [name=NAME] (# comments). Re-read on SIGHUP: new lines "
            "start streams, removed lines end theirs. The run lasts until Ctrl-C or SIGTERM.",
        ),
        click.option(
            "--reconnect-min",
            default=1.0,
            show_default=True,
            type=positive(),
            help="Seconds before a lost camera or URL is first reopened (then doubling, with jitter).",
        ),
        click.option(
            "--reconnect-max",
            default=30.0,
            show_default=True,
            type=positive(),
            help="The longest wait between two attempts to reopen a lost camera or URL.",
        ),
        click.option(
            "--no-reconnect",
            is_flag=True,
            help="A camera or URL that fails, ends or stalls ends its stream (and one unreachable at the start "
            "is an error).",
        ),
        click.option("--loop", is_flag=True, help="Video files start again at their end (demos, soak tests)."),
        click.option(
            "--segment-seconds",
            type=positive(),
            help="Record rolling segments OUT/NAME/NAME-YYYYmmddTHHMMSSZ.mp4 of this length (a new one after a "
            "reconnect); a full disk pauses recording until there is room.",
        ),
        click.option(
            "--retain-gb",
            type=positive(),
            help="Delete the oldest segments (videos and masks) beyond this many GB.",
        ),
        click.option("--retain-hours", type=positive(), help="Delete segments older than this many hours."),
        click.option(
            "--log-format",
            default="text",
            show_default=True,
            type=click.Choice(["text", "json"]),
            help="stderr's warnings, events and errors (json: one object a line, the summary too, for journald/Loki).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def check_camera_options(
    sources: tuple[str, ...],
    sources_file: Path | None,
    out: Path | None,
    save_masks: Path | None,
    segment_seconds: float | None,
    retain: float | None,
    reconnect_min: float,
    reconnect_max: float,
) -> list[Any]:
    """Refuse camera options that do not go together; returns the sources file's lines (a bad file: exit 2
    before the model loads)."""
    from runtime.errors import UserError
    from runtime.stream import read_sources

    if not sources and sources_file is None:
        raise UserError("no source to stream", "give SOURCE... or --sources FILE")
    if retain and segment_seconds is None:
        raise UserError("--retain-gb and --retain-hours delete segments: give --segment-seconds too", "--retain-gb")
    if segment_seconds is not None and out is None and save_masks is None:
        raise UserError("--segment-seconds records segments: give --out DIR or --save-masks DIR", "--segment-seconds")
    if reconnect_min > reconnect_max:
        raise UserError(f"{reconnect_min:g} s is above --reconnect-max {reconnect_max:g}", "--reconnect-min")
    return read_sources(sources_file) if sources_file is not None else []


def exit_for(result: Any) -> None:
    """Log each stream that failed; exit 1 when one did or a file was truncated."""
    import sys

    import runtime.log as log
    from runtime.stream.recording import DiskFull

    failed = False
    for index, stats in enumerate(result.streams):
        if stats.error is not None:
            exc = result.errors.get(index)
            log.error(str(exc) if isinstance(exc, DiskFull) else f"{stats.error} ({stats.source})", stream=stats.name)
        failed = failed or stats.error is not None or stats.ended_by == "truncated"
    if failed:
        sys.exit(1)
