"""`cfnet segment` and `cfnet stream`: click commands over the runtime (heavy imports inside the commands)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DEVICE = click.Choice(["auto", "cpu", "cuda"])


def _parsed(parse_name: str) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A click callback applying `runtime.artifact.<parse_name>` (a bad value is a usage error)."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        from runtime import artifact

        try:
            return getattr(artifact, parse_name)(value)
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
        click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime intra-op threads [default: cores]."),
        click.option(
            "--classes",
            callback=_parsed("parse_classes"),
            help="Class count or JSON list of names (models without metadata).",
        ),
        click.option("--mean", callback=_parsed("parse_triple"), help="Normalisation mean, R,G,B on the 0..1 scale."),
        click.option("--std", callback=_parsed("parse_triple"), help="Normalisation std, R,G,B on the 0..1 scale."),
        click.option("--input-size", callback=_parsed("parse_size"), help="HxW the frames are resized to fit."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _open(model: str, device: str, threads: int | None, overrides: dict[str, Any]) -> Any:
    from runtime.artifact import Overrides
    from runtime.backend import open_backend

    return open_backend(model, device=device, threads=threads, overrides=Overrides(**overrides))


@click.command("segment")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Overlay opacity.")
@click.option("--legend", is_flag=True, help="Draw the names of the classes present.")
@click.option("--json", "as_json", is_flag=True, help="Print the written files as JSON.")
def segment_command(
    images: tuple[Path, ...],
    model: str,
    device: str,
    threads: int | None,
    out: Path,
    alpha: float,
    legend: bool,
    as_json: bool,
    **overrides: Any,
) -> None:
    """Segment images: a mask PNG (trainIds) and an overlay PNG per image.

    \b
    Example:
      cfnet segment street.png --model model.onnx --out seg
      # -> seg/street_mask.png, seg/street_overlay.png
    """
    import cv2
    import numpy as np

    from runtime.errors import UserError
    from runtime.files import write_image
    from runtime.segmentation import segment

    stems = [p.stem for p in images]
    clash = next((s for s in stems if stems.count(s) > 1), None)
    if clash is not None:
        raise UserError(f"two images are named '{clash}': their outputs would overwrite each other", "IMAGES")
    written = []
    with _open(model, device, threads, overrides) as backend:
        for image_path in images:
            if not image_path.is_file():
                raise UserError("image not found", str(image_path))
            frame = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
            if frame is None:
                raise UserError("cannot read image", str(image_path))
            mask, blended = segment(frame, backend, alpha=alpha, legend=legend)
            mask_path = write_image(out / f"{image_path.stem}_mask.png", mask)
            overlay_path = write_image(out / f"{image_path.stem}_overlay.png", blended)
            classes = [backend.metadata.classes[c] for c in np.unique(mask)]
            written.append(
                {"image": str(image_path), "mask": str(mask_path), "overlay": str(overlay_path), "classes": classes}
            )
            if not as_json:
                click.echo(f"{image_path} -> {mask_path}, {overlay_path}")
    if as_json:
        click.echo(json.dumps(written, indent=2))


@click.command("stream")
@click.argument("source")
@model_options
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="MP4 of the overlays (input's size and FPS)."
)
@click.option("--show", is_flag=True, help="Show the overlays in a window (needs OpenCV with GUI; q quits).")
@click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Overlay opacity.")
@click.option("--legend", is_flag=True, help="Draw the names of the classes present.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after reading this many frames.")
@click.option(
    "--save-masks", type=click.Path(file_okay=False, path_type=Path), help="Also write each mask as PNG here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def stream_command(
    source: str,
    model: str,
    device: str,
    threads: int | None,
    out: Path | None,
    show: bool,
    alpha: float,
    legend: bool,
    max_frames: int | None,
    save_masks: Path | None,
    as_json: bool,
    **overrides: Any,
) -> None:
    """Segment a video file, a camera (index) or an rtsp/http stream, frame by frame.

    Reading, inference and writing run in three threads. A file loses no frame (the output has its frame
    count, size and FPS); a live source drops the oldest frame when inference lags. Ctrl-C or a lost source
    ends the run with a finalised MP4 and the summary: frames, drops, end-to-end FPS, stage latencies.

    \b
    Example:
      cfnet stream drive.mp4 --model model.onnx --out drive_seg.mp4
      cfnet stream 0 --model model.onnx --show          # webcam
      cfnet stream rtsp://camera/stream --model model.onnx --out cam.mp4 --max-frames 300 --json
    """
    from runtime.errors import UserError
    from runtime.files import write_image
    from runtime.progress import ProgressBar
    from runtime.stream import gui_available, run_stream
    from runtime.video import VideoSource

    if show and not gui_available():
        raise UserError(
            "--show needs OpenCV with GUI support", "pip install opencv-python instead of the headless build"
        )
    with _open(model, device, threads, overrides) as backend:
        src = VideoSource(source)
        bar = None
        if not as_json and not src.live:
            total = (
                min(src.frame_count, max_frames) if src.frame_count and max_frames else src.frame_count or max_frames
            )
            bar = ProgressBar(total, label="stream ")
        on_frame = None
        if save_masks is not None:
            folder = save_masks

            def on_frame(index: int, frame: Any, mask: Any, blended: Any) -> None:
                write_image(folder / f"{index:06d}.png", mask)

        try:
            stats = run_stream(
                src,
                backend,
                out,
                alpha=alpha,
                max_frames=max_frames,
                show=show,
                legend=legend,
                on_frame=on_frame,
                progress=bar.update if bar else None,
            )
        finally:
            if bar is not None:
                bar.close()
    if as_json:
        click.echo(json.dumps(stats.to_dict(), indent=2))
        return
    click.echo(
        f"{stats.frames} frames ({stats.dropped} dropped, {stats.resized} resized) from {stats.source} in "
        f"{stats.seconds:.2f} s: {stats.fps:.1f} fps end-to-end (source {stats.input_fps:.1f} fps, "
        f"{stats.backend}); ended: {stats.ended_by}"
    )
    if stats.output:
        click.echo(f"wrote {stats.output}")
    click.echo(f"{'latency ms':<12}{'median':>9}{'p90':>9}")
    for stage, values in stats.latency_ms.items():
        click.echo(f"{stage:<12}{values['median']:>9.2f}{values['p90']:>9.2f}")


@click.command("serve")
@click.argument("repository", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the endpoints bind to.")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for every model to load.")
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
    import signal
    import time

    from runtime.errors import UserError
    from runtime.triton_server import TritonServer

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
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
        signal.signal(signal.SIGTERM, previous)
