"""`run_bench(config)`: per model, parameters and GFLOPs; per backend, latency, throughput, speed-up and GFLOP/s,
optionally accuracy and stream FPS; the paper's figures beside ours. The report is written by `bench.report`."""

from __future__ import annotations

import datetime as dt
import gc
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.frames import bytes_per_frame, frame_call, frame_metadata, noise_frame
from bench.paper import PAPER
from bench.runners import (
    BACKENDS,
    FP16_BACKENDS,
    KNOWN_BACKENDS,
    ArtifactCache,
    Exporter,
    Runner,
    Skipped,
    artifact,
    first_line,
    int8_note,
    open_runner,
    split_backend,
)
from bench.serving import STREAMS, TritonRunner
from bench.timing import interleaved
from cfnet.errors import UserError

QUICK_MODELS = ("hrnet", "segformer", "cfnet-pspnet")
CALIB_BATCHES = 8
NOISE_CALIB_BATCHES = 2
FRAME = " frame"  # timing key suffix: a backend's end-to-end frame (preprocess + infer + postprocess)


@dataclass
class BenchConfig:
    """What to measure; `out` receives the report and, under `out/cache`, the exported artifacts.

    `artifacts`: ONNX files already exported (model -> precision -> path), used instead of exporting.
    """

    models: tuple[str, ...]
    preset: str = "paper"
    size: tuple[int, int] = (512, 512)
    backends: tuple[str, ...] = BACKENDS
    device: str = "cpu"
    warmup: int = 3
    iters: int = 20
    threads: int | None = None
    checkpoints: Path | None = None
    data: Path | None = None
    split: str = "val"
    images: int | None = None
    stream: Path | None = None
    streams: int = 1
    out: Path = Path("bench-report")
    num_classes: int = 19
    seed: int = 0
    artifacts: dict[str, dict[str, Path]] = field(default_factory=dict)
    command: str = field(default_factory=lambda: " ".join(["cfnet", *sys.argv[1:]]))


Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_bench(config: BenchConfig, *, exporter: Exporter | None = None, progress: Progress = _stderr) -> dict[str, Any]:
    """Measure every model on every backend; returns the result that `bench.report.write_report` writes."""
    import torch

    from bench.machine import load_average, machine_info

    _validate(config)
    config = _padded(config, progress)
    threads = config.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    dataset = _dataset(config) if config.data is not None else None
    feeds = _image_sizes(dataset, config.images) if dataset is not None and config.device == "cuda" else ()
    cache = ArtifactCache(config.out / "cache", config.size, exporter, _calibration(config, dataset), config.artifacts,
                          feeds, config.device)
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": config.command,
        "config": json.loads(json.dumps(asdict(config), default=str)),
        "machine": machine_info(threads),
        "models": [],
        "rows": [],
    }
    for name in config.models:
        model_info, rows = _bench_model(name, config, cache, threads, dataset, progress)
        result["models"].append(model_info)
        result["rows"].extend(rows)
    result["machine"]["load_average_end"] = load_average()
    return result


def _padded(config: BenchConfig, progress: Progress) -> BenchConfig:
    """`config` with `size` padded to a multiple of every chosen model's size divisor, as export and the runtime
    pad an input: every model is measured at the one size (U-Net at 100x100 would not run)."""
    import math

    import torch

    from cfnet.models import build_model
    from cfnet.sizes import padded_size

    with torch.device("meta"):  # shapes only: nothing is allocated
        divisors = {int(build_model(split_name(n)[0], preset="tiny").size_divisor) for n in config.models}
    size = padded_size(config.size, math.lcm(*divisors))
    if size == config.size:
        return config
    progress(f"[bench] --size {config.size[0]}x{config.size[1]} padded to {size[0]}x{size[1]}, a multiple of the "
             f"models' size divisors ({', '.join(str(d) for d in sorted(divisors))}), as export and the runtime pad")
    return replace(config, size=size)


def _validate(config: BenchConfig) -> None:
    from cfnet.checkpoint import BRANCHES
    from cfnet.models import MODEL_NAMES

    for name in config.models:
        model, branch = split_name(name)
        if model not in MODEL_NAMES:
            raise UserError(f"unknown model '{model}'", f"choose from {', '.join(MODEL_NAMES)}")
        if branch is not None and (branch not in BRANCHES or not model.startswith("cfnet-")):
            raise UserError(f"unknown branch '{name}'", "a fused model's branch: cfnet-pspnet:transformer")
    for backend in config.backends:
        if backend not in KNOWN_BACKENDS:
            raise UserError(f"unknown backend '{backend}'", f"choose from {', '.join(KNOWN_BACKENDS)}")
    if not config.models or not config.backends:
        raise UserError("nothing to measure", "--models and --backends need at least one name each")
    if config.checkpoints is not None and config.data is None:
        raise UserError("--checkpoints needs --data (the split to measure accuracy on)", str(config.checkpoints))
    if config.checkpoints is not None:  # every model's checkpoint found now, not after the first model's timing
        for name in config.models:
            _checkpoint(split_name(name)[0], config.checkpoints)  # a branch is read from its fused checkpoint
    if config.images is not None and config.images < 1:
        raise UserError("--images must be >= 1 (the number of split images to score)", f"--images {config.images}")
    if config.threads is not None and config.threads < 1:
        raise UserError("--threads must be >= 1", f"--threads {config.threads}")
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda but torch sees no CUDA device", "use --device cpu")
    if config.streams < 1 or (config.streams > 1 and config.stream is None):
        raise UserError("--streams K needs K >= 1 and --stream VIDEO (the video each stream plays)",
                        f"streams={config.streams}")
    if config.stream is not None:  # opened (first frame read) now, not after minutes of timing
        from runtime.video import VideoSource

        VideoSource(str(config.stream)).release()
    if config.iters < 1 or config.warmup < 0:
        raise UserError("--iters must be >= 1 and --warmup >= 0", f"iters={config.iters}, warmup={config.warmup}")


def _dataset(config: BenchConfig) -> Any:
    from cfnet.data.cityscapes import CityscapesDataset
    from cfnet.data.transforms import eval_transform

    assert config.data is not None
    if not Path(config.data).is_dir():
        raise UserError("data folder not found", str(config.data))
    return CityscapesDataset(config.data, config.split, transform=eval_transform())


def _samples(dataset: Any, limit: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(normalised `3 x H x W` float32 image, `H x W` trainId label) pairs of the split."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        image, label = dataset[index]
        yield np.asarray(image, dtype=np.float32), np.asarray(label)


def _image_sizes(dataset: Any, limit: int | None) -> list[tuple[int, int]]:
    """(H, W) of the split images `_samples` yields, from the PNG headers (a TensorRT profile must cover them)."""
    from cfnet.data.cityscapes import png_size

    return sorted({png_size(sample.image) for sample in dataset.samples[:limit]})


def _calibration(config: BenchConfig, dataset: Any) -> Callable[[], list[np.ndarray]]:
    """int8 calibration batches: images of the split when there is one, else a little seeded noise at the bench
    size (enough for speed, which is all that is measured without a split; calibration is the int8 export's
    slowest step at paper sizes)."""

    def batches() -> list[np.ndarray]:
        if dataset is not None:
            return [image[None] for image, _ in _samples(_calibration_split(config, dataset), CALIB_BATCHES)]
        rng = np.random.default_rng(config.seed)
        return [rng.standard_normal((1, 3, *config.size), dtype=np.float32) for _ in range(NOISE_CALIB_BATCHES)]

    return batches


def _calibration_split(config: BenchConfig, dataset: Any) -> Any:
    """The train split of `--data` when it has one (so int8 is not calibrated on the images it is scored on)."""
    from cfnet.data.cityscapes import CityscapesDataset
    from cfnet.data.transforms import eval_transform

    assert config.data is not None
    if config.split != "train" and (Path(config.data) / "leftImg8bit" / "train").is_dir():
        train = CityscapesDataset(config.data, "train", transform=eval_transform())
        if len(train):
            return train
    return dataset


def split_name(name: str) -> tuple[str, str | None]:
    """`cfnet-pspnet:transformer` -> (`cfnet-pspnet`, `transformer`): a fused model's branch measured alone."""
    model, _, branch = name.partition(":")
    return model, branch or None


def _load(name: str, config: BenchConfig) -> tuple[Any, str]:
    """The model to measure (random weights, or the checkpoint in `--checkpoints`) and its cache key."""
    import torch

    torch.manual_seed(config.seed)
    base, branch = split_name(name)
    tag = name.replace(":", "-")
    if config.checkpoints is None:
        from cfnet.models import build_model

        model = build_model(base, config.num_classes, config.preset)
        if branch is not None:
            from cfnet.models.contrafusion import TransformerBranch

            model = TransformerBranch(model)  # type: ignore[arg-type]
        return model.eval(), f"{tag}-{config.preset}"
    from cfnet.checkpoint import load_model

    path = _checkpoint(base, config.checkpoints)
    model = load_model(path, expect_model=base, branch=branch).eval()
    stamp = int(path.stat().st_mtime)
    return model, f"{tag}-{model.config.get('preset', 'ckpt')}-{path.stem}-{stamp}"


def _checkpoint(name: str, folder: Path) -> Path:
    """The checkpoint of model `name` in `--checkpoints`: `<name>.pt`, `<name>/best.pt` or `<name>/last.pt`."""
    candidates = [folder / f"{name}.pt", folder / name / "best.pt", folder / name / "last.pt"]
    for path in candidates:
        if path.is_file():
            return path
    raise UserError(
        f"no checkpoint for {name} (choose the models the folder holds with --models)",
        f"looked for {', '.join(str(p) for p in candidates)}",
    )


def _bench_model(
    name: str, config: BenchConfig, cache: ArtifactCache, threads: int, dataset: Any, progress: Progress
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from cfnet.models.profile import count_gflops, count_parameters

    model, key = _load(name, config)
    params_m = count_parameters(model) / 1e6
    gflops = float(count_gflops(model, config.size))
    progress(f"[bench] {name}: {params_m:.2f} M parameters, {gflops:.1f} GFLOPs at {config.size[0]}x{config.size[1]}")
    paper = PAPER.get(name)
    model_info = {
        "model": name,
        "preset": model.config.get("preset", config.preset),
        "params_m": params_m,
        "gflops": gflops,
        "paper_params_m": paper.params_m if paper else None,
        "paper_time_s": paper.time_s if paper else None,
        "paper_miou": paper.miou if paper else None,
    }
    images = np.random.default_rng(config.seed).standard_normal((1, 3, *config.size), dtype=np.float32)
    runners: dict[str, Runner] = {}
    reasons: dict[str, str] = {}
    returned: dict[str, int] = {}
    for backend in config.backends:
        try:
            progress(f"[bench] {name}: preparing {backend}")
            runner = open_runner(backend, model, key, cache, config.device, threads)
            # a first call proves it runs (fp16 kernels may be missing on CPU)
            returned[backend] = bytes_per_frame(runner.infer(images))
            runners[backend] = runner
        except Skipped as exc:
            reasons[backend] = str(exc)
        except Exception as exc:  # an inference that fails at run time is reported, not fatal to the bench
            reasons[backend] = f"inference failed: {first_line(exc)}"
        if backend in reasons:
            progress(f"[bench] {name}: {backend} skipped: {reasons[backend]}")
    progress(f"[bench] {name}: timing {', '.join(runners)} ({config.warmup} warm-up + {config.iters} rounds)")
    frame, metadata = noise_frame(config.size, config.seed), frame_metadata(model, config.size)
    calls: dict[str, Callable[[], object]] = {b: partial(r.infer, images) for b, r in runners.items()}
    calls.update({b + FRAME: frame_call(r, frame, metadata) for b, r in runners.items()})
    failed: dict[str, BaseException] = {}
    timings = interleaved(calls, config.warmup, config.iters, errors=failed)
    for call, error in failed.items():  # this backend's row says why; the others are measured on
        backend = call.removesuffix(FRAME)
        if backend in runners:
            reasons[backend] = f"inference failed: {first_line(error)}"
            progress(f"[bench] {name}: {backend} failed during timing: {reasons[backend]}")
            runners.pop(backend).close()
    accuracy = {}
    if dataset is not None and runners:
        progress(f"[bench] {name}: accuracy on {config.split}")
        from bench.accuracy import measure_accuracy

        accuracy = measure_accuracy(runners, _samples(dataset, config.images), config.num_classes,
                                    int(getattr(model, "size_divisor", 32)))
    streams = _streams(name, config, cache, model, key, runners, threads, progress) if config.stream is not None else {}
    serving = {}
    triton = runners.get("triton")
    if isinstance(triton, TritonRunner):
        progress(f"[bench] {name}: frames -> masks through Triton, 1 and {STREAMS} concurrent streams")
        frame = np.random.default_rng(config.seed).integers(0, 256, (*config.size, 3), dtype=np.uint8)
        serving["triton"] = triton.serving(frame, max(config.iters, 8))
    for runner in runners.values():
        runner.close()
    rows = [
        _row(model_info, backend, timings, reasons, accuracy, streams, returned, serving, config.device)
        for backend in config.backends
    ]
    del model
    gc.collect()
    return model_info, rows


def _row(
    model_info: dict[str, Any],
    backend: str,
    timings: dict[str, Any],
    reasons: dict[str, str],
    accuracy: dict[str, dict[str, Any]],
    streams: dict[str, dict[str, Any]],
    returned: dict[str, int],
    serving: dict[str, dict[str, Any]],
    device: str = "cpu",
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": model_info["model"],
        "backend": backend,
        "status": reasons.get(backend, "ok"),
        "params_m": model_info["params_m"],
        "gflops": model_info["gflops"],
        "median_ms": None,
        "p90_ms": None,
        "images_per_s": None,
        "speedup": None,
        "gflop_per_s": None,
        "frame_ms": None,
        "bytes_per_frame": returned.get(backend),
        "paper_params_m": model_info["paper_params_m"],
        "paper_time_s": model_info["paper_time_s"],
        "paper_miou": model_info["paper_miou"],
    }
    if backend in timings:
        timing = timings[backend]
        row["median_ms"] = timing.median * 1e3
        row["p90_ms"] = timing.p90 * 1e3
        row["images_per_s"] = 1.0 / timing.median
        row["gflop_per_s"] = model_info["gflops"] / timing.median
        if "torch" in timings:
            row["speedup"] = timings["torch"].median / timing.median
        if "torch-fp16" in timings and split_backend(backend)[0] in FP16_BACKENDS:
            row["speedup_fp16"] = timings["torch-fp16"].median / timing.median  # fp16 against fp16
    if backend + FRAME in timings:  # absent where the frame call failed and the inference call did not
        row["frame_ms"] = timings[backend + FRAME].median * 1e3
    note = int8_note(backend, device)
    if note is not None:
        row["int8"] = note
    if accuracy:
        row["miou"] = accuracy.get(backend, {}).get("miou")
        row["agreement"] = accuracy.get(backend, {}).get("agreement")
        if "error" in accuracy.get(backend, {}):
            row["status"] = f"timed; {accuracy[backend]['error']}"
    if streams:
        row.update(streams.get(backend, {"stream_fps": None, "backend_fps": None, "stream_note": None}))
    if serving:
        row.update(serving.get(backend, dict.fromkeys(serving["triton"])))
    return row


def _streams(
    name: str, config: BenchConfig, cache: ArtifactCache, model: Any, key: str, runners: dict[str, Runner],
    threads: int, progress: Progress,
) -> dict[str, dict[str, Any]]:
    """End-to-end FPS of `runtime`'s video stream beside the backend-only FPS, per runtime-servable backend."""
    from bench.streaming import multi_stream, stream_fps

    results: dict[str, dict[str, Any]] = {}
    for backend in runners:
        if backend == "torch":
            results[backend] = {"stream_fps": None, "backend_fps": None,
                                "stream_note": "the stream runs on runtime backends (torch-free)"}
            continue
        progress(f"[bench] {name}: streaming {Path(str(config.stream)).name} on {backend}")
        runner = runners[backend]
        try:
            path: Path | str
            if isinstance(runner, TritonRunner):
                path = runner.url
            else:
                path = artifact(backend, model, key, cache, config.device)
            out = config.out / "streams" / f"{name.replace(':', '-')}-{backend}.mp4"
            stats = stream_fps(Path(str(config.stream)), path, config.device, out, threads)
        except Exception as exc:  # this backend's stream failed: its row says so, the bench goes on
            note = f"stream failed: {first_line(exc)}"
            results[backend] = {"stream_fps": None, "backend_fps": None, "stream_note": note}
            progress(f"[bench] {name}: {backend} {note}")
            continue
        results[backend] = {"stream_fps": stats["stream_fps"], "backend_fps": stats["backend_fps"], "stream_note": None}
        if config.streams > 1:
            progress(f"[bench] {name}: {config.streams} streams of {Path(str(config.stream)).name} on {backend}: "
                     "one pipeline, sequential, concurrent processes")
            try:
                multi = multi_stream(Path(str(config.stream)), path, config.device, config.streams,
                                     config.out / "streams" / f"{name}-{backend}-x{config.streams}", config.threads)
            except RuntimeError as exc:
                results[backend]["stream_note"] = f"multi-stream: {exc}"
                continue
            sizes = multi.pop("batch_sizes")
            results[backend].update({f"streams_{k if k != 'streams' else 'k'}": v for k, v in multi.items()})
            results[backend]["streams_batch_sizes"] = ", ".join(f"{n}x{size}" for size, n in sizes.items())
    return results

