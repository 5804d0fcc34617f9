"""The results options of `cfnet stream` and `cfnet segment` (click) and the `ResultsConfig` they make.

Only click and constants are imported at the top (the command line's face loads this module). A bad value is a
`UserError` naming its option (`error: ... (--smooth)`, exit 2), raised before the model loads;
what needs the model (a drift alert without a reference, `ema` on a mask model) is refused once it is open,
before the first frame (`ResultsConfig.check`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runtime.errors import UserError
from runtime.options import NON_NEGATIVE, positive
from runtime.results.defaults import DEFAULT_ALERT, DEFAULT_HOLD_S, REGION_MODES

if TYPE_CHECKING:  # imported where used: the command line's face stays free of numpy and OpenCV
    from runtime.results.reference import Reference
    from runtime.results.stage import ResultsConfig

F = TypeVar("F", bound=Callable[..., Any])


def results_options(*, video: bool) -> Callable[[F], F]:
    """`--emit`, `--regions`, `--min-area`, `--epsilon`; with `video`, also `--emit-every`, `--smooth`,
    `--drift-alert` and `--drift-window` (the options of a stream, not of single images)."""
    options = [
        click.option(
            "--emit",
            metavar="FILE.jsonl|DIR/|-",
            help="Results as data, one JSON line per frame"
            + (" and stream" if video else " (image)")
            + ": class shares and regions. FILE.jsonl (appended to), DIR/ (DIR/<stream>.jsonl), - (stdout; "
            "the summary then goes to stderr).",
        ),
        click.option(
            "--regions",
            default="polygon",
            show_default=True,
            type=click.Choice(REGION_MODES),
            help="Regions in each line: exact polygons (outer ring, holes), COCO RLE, or none (shares only).",
        ),
        click.option("--min-area", default=1, show_default=True, type=int, help="Drop regions under N pixels."),
        click.option(
            "--epsilon",
            default=0.0,
            show_default=True,
            type=NON_NEGATIVE,
            help="Polygon simplification in pixels (Douglas-Peucker; 0: the exact pixel boundary).",
        ),
    ]
    if video:
        options += [
            click.option("--emit-every", default=1, show_default=True, type=int, help="A line every N frames."),
            click.option(
                "--smooth",
                metavar="flow|ema:A|hold:D|vote:K",
                help="Temporal smoothing of the masks: ema:A averages class probabilities (weight A of the newest "
                "frame), hold:D keeps a label until another leads by D, flow[:A[:D]] both along the optical flow "
                "(flow = flow:0.7:0.32; these need logits), vote:K the majority of the last K masks (any model); "
                "reset at scene cuts.",
            ),
            click.option(
                "--drift-alert",
                type=positive(),
                help=f"Warn when a stream's drift score stays above X [default: {DEFAULT_ALERT} where the model "
                "has a cfnet.reference].",
            ),
            click.option(
                "--drift-window",
                default=DEFAULT_HOLD_S,
                show_default=True,
                type=positive(),
                help="Seconds of stream time the drift score must stay above --drift-alert before the warning.",
            ),
        ]

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def results_config(
    *,
    regions: str = "polygon",
    min_area: int = 1,
    epsilon: float = 0.0,
    emit_every: int = 1,
    smooth: str | None = None,
    drift_alert: float | None = None,
    drift_window: float = DEFAULT_HOLD_S,
) -> ResultsConfig:
    """The options' `ResultsConfig` (a bad value: `UserError` naming the option). `drift_alert` None stays None
    here; `for_model` gives it the default where the model has a reference."""
    from runtime.results.records import ResultOptions
    from runtime.results.smoothing import parse_smoothing
    from runtime.results.stage import ResultsConfig

    checks: list[tuple[str, Callable[[], object]]] = [
        ("--regions", lambda: ResultOptions(regions=regions)),
        ("--min-area", lambda: ResultOptions(min_area=min_area)),
        ("--epsilon", lambda: ResultOptions(epsilon=epsilon)),
        ("--emit-every", lambda: ResultOptions(every=emit_every)),
    ]
    for option, check in checks:
        try:
            check()
        except ValueError as exc:
            raise UserError(str(exc), option) from None
    spec = None
    if smooth is not None:
        try:
            spec = parse_smoothing(smooth)
        except ValueError as exc:
            raise UserError(str(exc), "--smooth") from None
    if drift_alert is not None and not 0 < drift_alert < 1:
        raise UserError(f"{drift_alert:g} is not a drift score threshold: the score is in [0, 1]", "--drift-alert")
    if not (math.isfinite(drift_window) and drift_window >= 0):
        raise UserError(f"{drift_window:g} is not a number of seconds >= 0", "--drift-window")
    options = ResultOptions(regions, min_area, epsilon, emit_every)
    return ResultsConfig(options, smooth=spec, drift_alert=drift_alert, drift_hold_s=drift_window)


def for_model(config: ResultsConfig, reference: Reference | None, output: str) -> ResultsConfig:
    """`config` checked against the open model (its `reference`, the `output` its backend returns), with the
    default drift alert where the model has a reference and no threshold was given."""
    if config.drift_alert is None and reference is not None:
        config = replace(config, drift_alert=DEFAULT_ALERT)
    config.check(reference, (output,))
    return config
