"""`cfnet segment` and `cfnet stream`: click commands over the runtime (heavy imports inside the commands)."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runtime.cli_cameras import SignalsFirst, camera_options, check_camera_options, exit_for
from runtime.options import Float, positive
from runtime.results.options import results_options

DEVICE = click.Choice(["auto", "cpu", "cuda"])


def _parsed(
    parse_name: str, module: str = "runtime.artifact"
) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A click callback applying `<module>.<parse_name>` (a bad value is a usage error)."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        import importlib

        try:
            return getattr(importlib.import_module(module), parse_name)(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def model_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--model`, `--device`, `--threads` and the metadata overrides shared by both commands."""
    options = [
        click.option(
            "--model",
            "model",
            required=True,
            help="ONNX model, TensorRT engine, or a Triton server's model: grpc://HOST:PORT/NAME.",
        ),
        click.option("--device", default="auto", show_default=True, type=DEVICE, help="Where to run the model."),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            callback=thread_count,
            help="ONNX Runtime intra-op threads [default: cores; at most 4 per core].",
        ),
        click.option(
            "--classes",
            callback=_parsed("parse_classes"),
            help='Class count, JSON list of names (\'["road","car"]\') or JSON file of one (model without metadata).',
        ),
        click.option("--mean", callback=_parsed("parse_mean"), help="Normalisation mean, R,G,B on the 0..1 scale."),
        click.option("--std", callback=_parsed("parse_std"), help="Normalisation std, R,G,B on the 0..1 scale."),
        click.option("--input-size", callback=_parsed("parse_size"), help="HxW the frames are resized to fit."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def thread_count(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """A click callback: a thread or worker count within the machine (`runtime.stream.sizing.check_thread_count`)."""
    from runtime.stream.sizing import check_thread_count

    return None if value is None else check_thread_count(value, "--" + (param.name or "threads").replace("_", "-"))


def _open(model: str, device: str, threads: int | None, overrides: dict[str, Any]) -> Any:
    from runtime.artifact import Overrides
    from runtime.backends import open_backend
    from runtime.signals import interruptible

    # loaded beside the main thread: SIGTERM or Ctrl-C while ONNX Runtime builds its session ends the command
    return interruptible(lambda: open_backend(model, device=device, threads=threads, overrides=Overrides(**overrides)))


@click.command("segment")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--alpha", default=0.5, show_default=True, type=Float(0, 1), help="Overlay opacity.")
@click.option("--legend", is_flag=True, help="Draw the names of the classes present.")
@click.option("--json", "as_json", is_flag=True, help="Print the written files as JSON.")
@results_options(video=False)
def segment_command(
    images: tuple[Path, ...],
    model: str,
    device: str,
    threads: int | None,
    out: Path,
    alpha: float,
    legend: bool,
    as_json: bool,
    emit: str | None,
    regions: str,
    min_area: int,
    epsilon: float,
    **overrides: Any,
) -> None:
    """Segment images (a folder: the images in it): a mask PNG (trainIds) and an overlay PNG per image.

    \b
    Example:
      cfnet segment street.png --model model.onnx --out seg
      # -> seg/street_mask.png, seg/street_overlay.png
      cfnet segment photos/ --model model.onnx --out seg --emit seg/results.jsonl   # + shares, regions
    """
    import numpy as np

    from runtime.errors import UserError
    from runtime.files import Output, check_outputs, image_files, read_image, write_image
    from runtime.results.emit import STDOUT, JsonLines
    from runtime.results.options import results_config
    from runtime.results.records import frame_record
    from runtime.segmentation import segment

    # results as data (issue 24): a record per image (stream: the image's name); with --emit -, stdout has only them
    options = results_config(regions=regions, min_area=min_area, epsilon=epsilon).options
    lines = JsonLines(emit) if emit is not None else None
    echo = functools.partial(click.echo, err=emit == STDOUT)
    images = tuple(image_files(images))
    stems = [p.stem for p in images]
    clash = next((s for s in stems if stems.count(s) > 1), None)
    if clash is not None:
        raise UserError(f"two images are named '{clash}': their outputs would overwrite each other", "IMAGES")
    targets = [(out / f"{p.stem}_mask.png", out / f"{p.stem}_overlay.png") for p in images]
    check_outputs(
        [Output(out, folder=True), *(Output(path) for pair in targets for path in pair)],
        [*images, *([] if "://" in model else [model])],
    )
    for image_path in images:  # every input is readable before anything is written
        read_image(image_path)
    written = []
    with _open(model, device, threads, overrides) as backend, lines or contextlib.nullcontext():
        for image_path, (mask_target, overlay_target) in zip(images, targets, strict=True):
            frame = read_image(image_path)
            mask, blended = segment(frame, backend, alpha=alpha, legend=legend)
            mask_path = write_image(mask_target, mask)
            overlay_path = write_image(overlay_target, blended)
            classes = [backend.metadata.classes[c] for c in np.unique(mask)]
            if lines is not None:
                lines.write(frame_record(mask, backend.metadata.classes, source=str(image_path),
                                         stream=image_path.stem, frame=0, time=0.0, options=options))  # fmt: skip
            written.append(
                {"image": str(image_path), "mask": str(mask_path), "overlay": str(overlay_path), "classes": classes}
            )
            if not as_json:
                echo(f"{image_path} -> {mask_path}, {overlay_path}")
    if as_json:
        echo(json.dumps(written, indent=2))


STREAM_EXIT_CODES = """\b
Exit codes (the rule of every command: README, Exit codes):
  0    every stream ended (end of file, lost camera, --max-frames, stall), or Ctrl-C, SIGTERM or q
       stopped the run: outputs finalised, summary printed
  1    a stream failed midway (a full disk with one --out file: `error: disk full (PATH)`) or a video was
       truncated (fewer frames than its MP4 index declares): its output is finalised, the others completed
  2    bad input (source, model, option, an output that is an input or cannot be written), or the
       model or its server failed or was lost (the MP4s finalised): one line
  130  Ctrl-C or SIGTERM before the first frame: nothing written
"""


@click.command("stream", cls=SignalsFirst, epilog=STREAM_EXIT_CODES)
@click.argument("sources", metavar="SOURCE...", nargs=-1)
@model_options
@click.option(
    "--out",
    type=click.Path(),
    help="MP4 of the overlays (the source's size and FPS); with several sources, an existing folder or a "
    "trailing / (seg/) a folder, one MP4 per source.",
)
@click.option("--show", is_flag=True, help="Show the overlays in a window (needs OpenCV with GUI; q quits).")
@click.option("--alpha", default=0.5, show_default=True, type=Float(0, 1), help="Overlay opacity.")
@click.option("--legend", is_flag=True, help="Draw the names of the classes present.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop each source after reading this many frames.")
@click.option(
    "--save-masks",
    type=click.Path(file_okay=False),
    help="Also write each mask as PNG here (several sources: a folder per source).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    help="Frames per inference [default: the number of sources, capped by the model; 1 on a CPU].",
)
@click.option(
    "--batch-timeout",
    "batch_timeout",
    default=40.0,
    show_default=True,
    type=Float(0, 60_000),
    help="ms the oldest frame of an unfilled batch waits before the batch is inferred.",
)
@click.option(
    "--infer-workers",
    type=click.IntRange(min=1),
    callback=thread_count,
    help="Inference calls in flight at once [default: 2 for several sources on the CPU, else 1]; "
    "--threads defaults to the cores shared among them.",
)
@click.option(
    "--stall-timeout",
    default=10.0,
    show_default=True,
    type=positive(86_400),
    help="Seconds a source may block in a read before its stream is reconnected (a live source) or ended "
    "(the others go on).",
)
@camera_options
@click.option(
    "--serve",
    metavar="[HOST:]PORT",
    callback=_parsed("parse_address", "runtime.liveview"),
    help="Live view over HTTP while streaming: page, MJPEG, /stats, /metrics, /healthz, the /streams control API "
    "(host 127.0.0.1 unless given; [::1]:PORT for IPv6).",
)
@click.option(
    "--serve-token",
    help="A token every live-view request but /healthz must carry (?token= or a Bearer header); turns the control "
    "API on.",
)
@click.option(
    "--serve-insecure", is_flag=True, help="Serve beyond loopback without --serve-token (anyone on the network)."
)
@click.option("--serve-fps", default=10.0, show_default=True, type=Float(0.1, 1000), help="Live view's frames/s cap.")
@click.option(
    "--serve-quality", default=80, show_default=True, type=click.IntRange(1, 100), help="Live view's JPEG quality."
)
@results_options(video=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def stream_command(**options: Any) -> None:
    """Segment video files, cameras (an index) or rtsp/http streams, several in one pipeline.

    One reader per source, one batcher forming batches across the sources (full, or its oldest frame
    waited --batch-timeout), one inference stage (--infer-workers calls at once), one writer per source.
    Per source: order kept; a file loses no frame (its output has its frame count, size and FPS); a live
    source drops its own oldest frame when inference lags; a source that ends, fails or stalls ends only
    its own stream. Ctrl-C or SIGTERM ends the run with finalised MP4s and the summary: per stream frames,
    drops, FPS, stage latencies; the aggregate frames/s and batch sizes.

    \b
    Example:
      cfnet stream drive.mp4 --model model.onnx --out drive_seg.mp4
      cfnet stream 0 --model model.onnx --show          # webcam
      cfnet stream cam1.mp4 cam2.mp4 rtsp://cam3/live --model model.onnx --out seg/ --json
      cfnet stream 0 1 --model model.onnx --serve 0.0.0.0:8080 --serve-token s3cret   # browse :8080
      cfnet stream drive.mp4 --model model.onnx --emit results.jsonl --smooth hold:0.15   # results as data
    """
    import sys

    import runtime.log as log
    from runtime.errors import UserError
    from runtime.memory import long_run

    long_run()  # before any thread allocates: FFmpeg's decoders start theirs when a file opens (runtime/memory.py)
    log.set_format(options["log_format"])
    try:
        _stream(**options)  # SIGTERM before the first frame (loading, opening): exit 130, as Ctrl-C (SignalsFirst)
    except (UserError, KeyboardInterrupt) as exc:
        if not log.json_lines():
            raise
        log.error("interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc))
        sys.exit(130 if isinstance(exc, KeyboardInterrupt) else 2)


def _stream(
    *,
    sources: tuple[str, ...],
    model: str,
    device: str,
    threads: int | None,
    out: str | None,
    show: bool,
    alpha: float,
    legend: bool,
    max_frames: int | None,
    save_masks: str | None,
    batch: int | None,
    batch_timeout: float,
    infer_workers: int | None,
    stall_timeout: float,
    sources_file: Path | None,
    reconnect_min: float,
    reconnect_max: float,
    no_reconnect: bool,
    loop: bool,
    segment_seconds: float | None,
    retain_gb: float | None,
    retain_hours: float | None,
    log_format: str,
    serve: tuple[str, int] | None,
    serve_token: str | None,
    serve_insecure: bool,
    serve_fps: float,
    serve_quality: int,
    as_json: bool,
    emit: str | None,
    regions: str,
    min_area: int,
    epsilon: float,
    emit_every: int,
    smooth: str | None,
    drift_alert: float | None,
    drift_window: float,
    **overrides: Any,
) -> None:
    import sys

    import runtime.log as log
    from runtime.errors import UserError
    from runtime.files import Output, check_outputs, names_folder
    from runtime.progress import ProgressBar
    from runtime.results.emit import STDOUT, JsonLines
    from runtime.results.options import for_model, results_config
    from runtime.stream import CPU_WORKERS, Reconnect, run_streams, worker_threads
    from runtime.stream.display import require_gui
    from runtime.stream.summary import summary_text
    from runtime.video import MP4_SUFFIXES, VideoSource, is_live, stream_names

    # results as data (issue 24): options and the --emit target checked before the model loads
    results = results_config(
        regions=regions, min_area=min_area, epsilon=epsilon, emit_every=emit_every, smooth=smooth,
        drift_alert=drift_alert, drift_window=drift_window,
    )  # fmt: skip
    lines = JsonLines(emit) if emit is not None else None
    if show:
        require_gui()
    if serve is not None:
        from runtime.liveview import bind_address

        bind_address(serve, serve_token, serve_insecure)  # refused before the model loads
    masks = Path(save_masks) if save_masks is not None else None
    listed = check_camera_options(
        sources, sources_file, Path(out) if out is not None else None, masks, segment_seconds,
        retain_gb or retain_hours, reconnect_min, reconnect_max,
    )  # fmt: skip
    several = len(sources) + len(listed) > 1 or sources_file is not None or segment_seconds is not None
    folder = out is not None and (several or names_folder(out) or Path(out).is_dir())
    if several and out is not None and (Path(out).suffix or Path(out).is_file()):
        raise UserError("with several sources --out is a folder (so with --sources or --segment-seconds)", out)
    names = stream_names(list(sources))
    if segment_seconds is not None:  # segment folders OUT/NAME/
        videos = [Output(Path(out) / n, "--out", folder=True) for n in names] if out is not None else []
    else:
        outs = [Path(out) / f"{n}.mp4" for n in names] if folder and out is not None else [out]
        suffixes = tuple(x for x in MP4_SUFFIXES if x)
        videos = [Output(o, "--out", suffixes=suffixes) for o in outs if o is not None]
    mask_folders = [masks / n if several else masks for n in names] if masks is not None else []
    check_outputs(
        [*videos, *(Output(f, "--save-masks", folder=True) for f in mask_folders)],
        [*(x for x in sources if not is_live(x)), *([] if "://" in model else [model])],
    )
    if threads is None and (several or (infer_workers or 1) > 1):
        threads = worker_threads(infer_workers or CPU_WORKERS)  # the workers share the cores
    reconnect = None if no_reconnect else Reconnect(reconnect_min, reconnect_max)
    with _open(model, device, threads, overrides) as backend, contextlib.ExitStack() as stack:
        results = for_model(results, backend.metadata.reference, backend.output)  # before a source opens
        if lines is not None:
            stack.enter_context(lines)
        if serve is not None:
            from runtime.liveview import LiveView

            meta = backend.metadata
            view = LiveView(
                serve,
                meta.classes,
                meta.palette,
                token=serve_token,
                insecure=serve_insecure,
                quality=serve_quality,
                max_fps=serve_fps,
            )
            stack.enter_context(view)
            log.info(f"live view: {view.url}", event="live view", url=view.url)
        opened: list[VideoSource | str] = []  # a live source under --reconnect is opened by its reader
        try:
            for source in sources:
                opened.append(source if reconnect is not None and is_live(source) else VideoSource(source))
        except BaseException:
            for src in opened:
                if isinstance(src, VideoSource):
                    src.release()
            raise
        bar = None
        files = [o for o in opened if isinstance(o, VideoSource) and not o.live]
        if not (as_json or log.json_lines() or sources_file) and len(files) == len(opened):
            counts = [
                min(c, max_frames) if c and max_frames else c or max_frames for c in (o.frame_count for o in files)
            ]
            bar = ProgressBar(sum(c for c in counts if c) if all(counts) and not loop else None, label="stream ")
        try:
            result = run_streams(
                opened,
                backend,
                Path(out) if folder and out is not None else None,
                outs=None if folder or several else [out],
                names=names,
                masks_dir=masks if several else None,
                mask_outs=None if several else [masks],
                segment_seconds=segment_seconds,
                retain_bytes=retain_gb * 1e9 if retain_gb else None,
                retain_seconds=retain_hours * 3600 if retain_hours else None,
                reconnect=reconnect,
                loop=loop,
                sources_file=sources_file,
                batch=batch,
                batch_timeout_ms=batch_timeout,
                infer_workers=infer_workers,
                stall_timeout=stall_timeout,
                alpha=alpha,
                max_frames=max_frames,
                show=show,
                legend=legend,
                progress=bar.update if bar else None,
                on_start=view.attach if serve is not None else None,
                results=results,
                emit=lines,
            )
        finally:
            if bar is not None:
                bar.close()
    with contextlib.redirect_stdout(sys.stderr) if emit == STDOUT else contextlib.nullcontext():  # stdout: lines
        if as_json:
            click.echo(json.dumps(result.to_dict(), indent=2))
        elif not log.json_lines():
            click.echo(summary_text(result))
    if log.json_lines():
        log.info("summary", event="summary", **result.to_dict())
    exit_for(result)


@click.command("serve")
@click.argument("repository", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the endpoints bind to.")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    type=positive(86_400),
    help="Seconds to wait for every model to load.",
)
def serve_command(
    repository: Path, host: str, http_port: int, grpc_port: int, metrics_port: int, timeout: float
) -> None:
    """Serve a model repository (`cfnet export triton`) with Triton Inference Server on this machine.

    Runs the tritonserver binary of the nvidia-pytriton wheel (`pip install 'cfnet[serve]'`; Python backend
    only: export with --backend python). Prints the endpoints once every model is ready; Ctrl-C or SIGTERM
    stop the server and its Python-backend processes.

    \b
    Example:
      cfnet export triton model.onnx --out triton-repo --backend python
      cfnet serve triton-repo --grpc-port 8001
      cfnet stream drive.mp4 --model grpc://127.0.0.1:8001/cfnet --out drive_seg.mp4
    """
    import time

    from runtime.errors import UserError
    from runtime.signals import sigterm_as_interrupt
    from runtime.triton.server import TritonServer

    with sigterm_as_interrupt():
        server = TritonServer(repository, host, http_port, grpc_port, metrics_port)
        try:
            server.start(timeout)
            click.echo(f"Triton ready: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}")
            for model, state, _ in server.models():
                click.echo(f"  {model:<24}{state}")
            click.echo("Ctrl-C stops the server")
            while server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
            raise UserError(f"tritonserver exited: {server.log_tail()}", str(repository))
        except KeyboardInterrupt:
            click.echo("stopping")
        finally:
            server.stop()
