"""The runners per backend: PyTorch eager (fp32, and fp16 autocast on CUDA), ONNX Runtime (fp32, fp16, int8), TensorRT
and a Triton server (opt-in).

Every runner takes a float32 `N x 3 x H x W` array and returns what its model returns (float32 logits, or the
uint8 mask of a `+mask` backend), synchronously (a GPU runner has finished when `infer` returns), so that the
timing loop can treat them all alike. `NAME+mask` runs the export with `--output mask` (in-graph argmax).
A backend that cannot run here raises `Skipped` with the reason, which the report shows in its row.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

BACKENDS = ("torch", "torch-fp16", "onnxruntime", "onnxruntime-int8", "onnxruntime-int8-auto", "onnxruntime-fp16",
            "tensorrt", "onnxruntime+mask", "tensorrt+mask")
SERVED = ("triton",)  # opt-in (`--backends ...,triton`): starts a Triton server per model
KNOWN_BACKENDS = BACKENDS + SERVED
ONNX_PRECISION = {
    "onnxruntime": "fp32",
    "onnxruntime-fp16": "fp16",
    "onnxruntime-int8": "int8",
    "onnxruntime-int8-auto": "int8-auto",
    "tensorrt": "fp32",
}
FP16_BACKENDS = ("torch-fp16", "onnxruntime-fp16", "tensorrt")
"""Backends that compute in fp16 (TensorRT builds with its FP16 flag): compared with `torch-fp16` too."""
AUTO_AGREEMENT = 0.995
"""`int8-auto`: int8 from the precision autopilot at this held-out argmax agreement with fp32 (the project goal)."""
Shape = tuple[int, int, int, int]

Exporter = Callable[..., Path]
"""`exporter(model, out, *, size, precision, calib_images) -> Path`, as `export.onnx.export_onnx`."""


class Skipped(Exception):
    """This backend cannot run here (no GPU, no TensorRT, export failed): the message is the reason."""


class Runner(Protocol):
    name: str

    def infer(self, images: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class TorchRunner:
    """PyTorch eager in inference mode: the baseline every speed-up is measured against, set up as a user would.

    It runs a copy of `model`: `.to(device)` and `.eval()` act in place, and the other backends export the
    caller's model (on the CPU, as it was). On CUDA, cuDNN picks its fastest kernels for the timed shape
    (`torch.backends.cudnn.benchmark`, restored on `close`); `fp16`: autocast to fp16 (CUDA only), the baseline
    of the fp16 backends (TensorRT's FP16 build, ONNX Runtime fp16).
    """

    def __init__(self, model: Any, device: str, fp16: bool = False) -> None:
        import torch

        if fp16 and device != "cuda":
            raise Skipped("fp16 autocast needs CUDA (use --device cuda)")
        self._torch = torch
        self.name = "torch-fp16" if fp16 else "torch"
        self.fp16 = fp16
        self.device = torch.device(device)
        self._benchmark = torch.backends.cudnn.benchmark
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = copy.deepcopy(model).to(self.device).eval()

    def infer(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), torch.autocast(self.device.type, torch.float16, enabled=self.fp16):
            logits = self.model(torch.from_numpy(images).to(self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return logits.float().cpu().numpy()

    def close(self) -> None:
        self.model = None
        self._torch.backends.cudnn.benchmark = self._benchmark


class RuntimeRunner:
    """A `runtime` backend (ONNX Runtime or the native TensorRT engine), exactly as it is served at the edge.

    ONNX Runtime gets `intra_op_num_threads` equal to torch's thread count.
    """

    def __init__(self, name: str, path: Path, device: str, threads: int, fp16: bool = False) -> None:
        import runtime.backends
        from runtime.errors import UserError as RuntimeUserError

        self.name = name
        try:
            self.backend = runtime.backends.open_backend(path, device=device, threads=threads, fp16=fp16)
        except RuntimeUserError as exc:
            raise Skipped(str(exc)) from exc
        except Exception as exc:  # ORT's own exception types, e.g. kernels missing for an fp16 graph on CPU
            raise Skipped(f"cannot load {path.name}: {first_line(exc)}") from exc

    def infer(self, images: np.ndarray) -> np.ndarray:
        return self.backend.infer(images)

    def close(self) -> None:
        self.backend.close()


def engine_shapes(size: tuple[int, int], feeds: Iterable[tuple[int, int]], divisor: int) -> tuple[Shape, Shape, Shape]:
    """The engine's optimisation profile (min, opt, max `N x C x H x W`): tuned for the timed `size` and wide
    enough for every image it will be fed (`feeds`: the split's image sizes, which the accuracy step pads to a
    multiple of the model's `divisor`)."""
    sides = [size, *((h + -h % divisor, w + -w % divisor) for h, w in feeds)]
    low = (min(h for h, _ in sides), min(w for _, w in sides))
    high = (max(h for h, _ in sides), max(w for _, w in sides))
    return (1, 3, *low), (1, 3, *size), (1, 3, *high)


def batches_digest(batches: Sequence[np.ndarray]) -> str:
    """A short digest of calibration batches (shapes and values): what an int8 export's scales depend on."""
    digest = hashlib.sha256()
    for batch in batches:
        array = np.ascontiguousarray(batch, dtype=np.float32)
        digest.update(repr(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:12]


class ArtifactCache:
    """Exports each model once per precision into `folder` and reuses the files in later runs.

    A file's name holds everything that changes it: the model key (name and preset, or the checkpoint), the
    size, the precision, an int8 file its target and the digest of its calibration batches, an engine its
    profile. `known`: files exported elsewhere (model name -> precision -> path), used as they are. `feeds`: the
    image sizes an engine will be fed besides `size` (the split scored for accuracy). `device`: where the files
    run, which decides the int8 target (`int8_target`).
    """

    def __init__(
        self,
        folder: Path,
        size: tuple[int, int],
        exporter: Exporter | None = None,
        calib_images: Callable[[], Iterable[np.ndarray]] | None = None,
        known: Mapping[str, Mapping[str, Path]] | None = None,
        feeds: Sequence[tuple[int, int]] = (),
        device: str = "cpu",
    ) -> None:
        self.folder = folder
        self.int8_target = int8_target(device)
        self.known = known or {}
        self.size = size
        self.exporter = exporter
        self.calib_images = calib_images
        self.feeds = tuple(feeds)
        self.failures: dict[Path, str] = {}
        self._calib: list[np.ndarray] | None = None

    def onnx(self, model: Any, key: str, precision: str, output: str = "logits") -> Path:
        """The ONNX file of `model` at `precision`, exported on first use; `Skipped` if the export fails.

        `output="mask"`: the logits file with the in-graph argmax appended (`export.mask.write_mask_variant`).
        """
        if output != "logits":
            from export.mask import write_mask_variant

            logits = self.onnx(model, key, precision)
            path = self.folder / f"{logits.stem}-{output}.onnx"
            if not path.exists():
                self.folder.mkdir(parents=True, exist_ok=True)
                write_mask_variant(logits, path, output)
            return path
        given = self.known.get(getattr(model, "config", {}).get("model", ""), {}).get(precision)
        if given is not None:
            return Path(given)
        calib = self._calibration() if precision.startswith("int8") else None
        precision_tag = f"{precision}-{self.int8_target}" if precision.startswith("int8") else precision
        tag = f"{precision_tag}-{batches_digest(calib)}" if calib is not None else precision_tag
        path = self.folder / f"{key}-{self.size[0]}x{self.size[1]}-{tag}.onnx"
        if path in self.failures:
            raise Skipped(self.failures[path])
        if path.exists():
            return path
        self.folder.mkdir(parents=True, exist_ok=True)
        options = autopilot_options(calib) if precision == "int8-auto" else {"precision": precision}
        if precision.startswith("int8"):
            options["int8_target"] = self.int8_target
        try:
            return Path(self._exporter()(model, path, size=self.size, calib_images=calib, **options))
        except Exception as exc:  # a failed export skips this backend, with the reason in the report
            self.failures[path] = f"{precision} export failed: {first_line(exc)}"
            raise Skipped(self.failures[path]) from exc

    def engine(self, model: Any, key: str, output: str = "logits") -> Path:
        """A TensorRT engine built from the fp32 ONNX file (FP16 enabled), its profile covering `size` and
        `feeds`; cached like the ONNX files, `Skipped` if the build fails."""
        from export.tensorrt import build_engine

        onnx_path = self.onnx(model, key, "fp32", output)
        low, opt, high = engine_shapes(self.size, self.feeds, int(getattr(model, "size_divisor", 32)))
        path = onnx_path.with_name(f"{onnx_path.stem}-max{high[2]}x{high[3]}.engine")
        if path in self.failures:
            raise Skipped(self.failures[path])
        if not path.exists():
            try:
                build_engine(onnx_path, path, fp16=True, min_shape=low, opt_shape=opt, max_shape=high)
            except Exception as exc:  # a failed build skips TensorRT, with the reason in the report
                self.failures[path] = f"engine build failed: {first_line(exc)}"
                raise Skipped(self.failures[path]) from exc
        return path

    def _calibration(self) -> list[np.ndarray] | None:
        if self._calib is None and self.calib_images is not None:
            self._calib = list(self.calib_images())
        return self._calib

    def _exporter(self) -> Exporter:
        if self.exporter is None:
            from export.onnx import export_onnx

            self.exporter = export_onnx
        return self.exporter


def int8_target(device: str) -> str:
    """The int8 export a bench on `device` times, the one that fits where it runs: on CUDA TensorRT's symmetric
    int8 (the TensorRT EP refuses the uint8 Q/DQ of the CPU targets and splits the graph around them); on a CPU
    with VNNI or AMX `cpu-vnni` (u8 x s8 kernels, exact there), on any other CPU `cpu` (exact everywhere)."""
    import runtime.cpu

    if device == "cuda":
        return "tensorrt"
    return "cpu-vnni" if runtime.cpu.int8_path() in ("vnni", "amx") else "cpu"


def int8_note(backend: str, device: str) -> str | None:
    """What an int8 row ran: its export's target and, on the CPU, the CPU's int8 path (None for other rows)."""
    import runtime.cpu

    if not ONNX_PRECISION.get(split_backend(backend)[0], "").startswith("int8"):
        return None
    target = int8_target(device)
    if device == "cuda":
        return f"{target} target"
    return f"{target} target on {runtime.cpu.describe(runtime.cpu.int8_path())}"


def autopilot_options(calib: Iterable[np.ndarray] | None) -> dict[str, Any]:
    """Export options of `int8-auto`: a quarter of the calibration images (at least one) are held out."""
    count = len(list(calib)) if calib is not None else 0
    held = max(1, count // 4)
    return {"precision": "int8", "min_agreement": AUTO_AGREEMENT, "calib_count": count - held, "heldout_count": held}


def split_backend(backend: str) -> tuple[str, str]:
    """`onnxruntime+mask` -> (`onnxruntime`, `mask`); `tensorrt` -> (`tensorrt`, `logits`)."""
    base, _, variant = backend.partition("+")
    return base, variant or "logits"


def artifact(backend: str, model: Any, key: str, cache: ArtifactCache, device: str) -> Path:
    """The file a runtime backend serves (ONNX, or a TensorRT engine), exported on first use; `Skipped` if it
    cannot be made or run here."""
    base, output = split_backend(backend)
    if base == "tensorrt":
        from runtime.backends.availability import tensorrt_unavailable

        reason = tensorrt_unavailable()
        if reason is not None:
            raise Skipped(reason)
        if device != "cuda":
            raise Skipped("tensorrt runs on a GPU only (use --device cuda)")
        return cache.engine(model, key, output)
    if base in ONNX_PRECISION:
        return cache.onnx(model, key, ONNX_PRECISION[base], output)
    raise ValueError(f"unknown backend {backend!r}")


def open_runner(backend: str, model: Any, key: str, cache: ArtifactCache, device: str, threads: int) -> Runner:
    """Build the runner of `backend` for `model` (exporting what it needs); `Skipped` with the reason if it can't."""
    if backend in ("torch", "torch-fp16"):
        return TorchRunner(model, device, fp16=backend == "torch-fp16")
    if backend == "triton":
        from bench.serving import TritonRunner
        from runtime.errors import UserError as RuntimeUserError

        try:
            return TritonRunner(cache.onnx(model, key, "fp32"), cache.folder)
        except RuntimeUserError as exc:
            raise Skipped(str(exc)) from exc
    path = artifact(backend, model, key, cache, device)
    base = split_backend(backend)[0]
    fp16 = ONNX_PRECISION.get(base) == "fp16"
    return RuntimeRunner(backend, path, "cuda" if base == "tensorrt" else device, threads, fp16=fp16)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty), at most 200 characters."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
