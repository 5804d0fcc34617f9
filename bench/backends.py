"""The runners per backend: PyTorch eager, ONNX Runtime (fp32, fp16, int8) and TensorRT, built once per model.

Every runner takes a float32 `N x 3 x H x W` array and returns the logits as a float32 array, synchronously
(a GPU runner has finished when `infer` returns), so that the timing loop can treat them all alike.
A backend that cannot run here raises `Skipped` with the reason, which the report shows in its row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8", "onnxruntime-int8-auto", "onnxruntime-fp16", "tensorrt")
ONNX_PRECISION = {
    "onnxruntime": "fp32",
    "onnxruntime-fp16": "fp16",
    "onnxruntime-int8": "int8",
    "onnxruntime-int8-auto": "int8-auto",
    "tensorrt": "fp32",
}
AUTO_AGREEMENT = 0.995
"""`int8-auto`: int8 from the precision autopilot at this held-out argmax agreement with fp32 (the project goal)."""

Exporter = Callable[..., Path]
"""`exporter(model, out, *, size, precision, calib_images) -> Path`, as `export.onnx.export_onnx`."""


class Skipped(Exception):
    """This backend cannot run here (no GPU, no TensorRT, export failed): the message is the reason."""


class Runner(Protocol):
    name: str

    def infer(self, images: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class TorchRunner:
    """PyTorch eager in inference mode: the baseline every speed-up is measured against."""

    name = "torch"

    def __init__(self, model: Any, device: str) -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def infer(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(images).to(self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return logits.float().cpu().numpy()

    def close(self) -> None:
        self.model = None


class RuntimeRunner:
    """A `runtime` backend (ONNX Runtime or the native TensorRT engine), exactly as it is served at the edge.

    ONNX Runtime gets `intra_op_num_threads` equal to torch's thread count.
    """

    def __init__(self, name: str, path: Path, device: str, threads: int) -> None:
        import runtime.backend
        from runtime.errors import UserError as RuntimeUserError

        self.name = name
        try:
            self.backend = runtime.backend.open_backend(path, device=device, threads=threads)
        except RuntimeUserError as exc:
            raise Skipped(str(exc)) from exc
        except Exception as exc:  # ORT's own exception types, e.g. kernels missing for an fp16 graph on CPU
            raise Skipped(f"cannot load {path.name}: {_first_line(exc)}") from exc

    def infer(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.backend.infer(images), dtype=np.float32)

    def close(self) -> None:
        self.backend.close()


def tensorrt_unavailable() -> str | None:
    """Why TensorRT cannot run here, or None when it can: a working `tensorrt.Builder` and a CUDA device."""
    try:
        import tensorrt as trt
    except ImportError:
        return "tensorrt is not installed (pip install 'cfnet[tensorrt]' on a machine with an NVIDIA GPU)"
    if not hasattr(trt, "Builder"):
        return "tensorrt is not installed (only its type stubs are)"
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # the builder needs a driver and a GPU
        return f"tensorrt.Builder fails: {_first_line(exc)}"
    if builder is None:
        return "tensorrt.Builder could not be created (no CUDA device)"
    return None


class ArtifactCache:
    """Exports each model once per precision into `folder` and reuses the files in later runs.

    `known`: files exported elsewhere (model name -> precision -> path), used as they are.
    """

    def __init__(
        self,
        folder: Path,
        size: tuple[int, int],
        exporter: Exporter | None = None,
        calib_images: Callable[[], Iterable[np.ndarray]] | None = None,
        known: Mapping[str, Mapping[str, Path]] | None = None,
    ) -> None:
        self.folder = folder
        self.known = known or {}
        self.size = size
        self.exporter = exporter
        self.calib_images = calib_images
        self.failures: dict[Path, str] = {}

    def onnx(self, model: Any, key: str, precision: str) -> Path:
        """The ONNX file of `model` at `precision`, exported on first use; `Skipped` if the export fails."""
        given = self.known.get(getattr(model, "config", {}).get("model", ""), {}).get(precision)
        if given is not None:
            return Path(given)
        path = self.folder / f"{key}-{self.size[0]}x{self.size[1]}-{precision}.onnx"
        if path in self.failures:
            raise Skipped(self.failures[path])
        if path.exists():
            return path
        self.folder.mkdir(parents=True, exist_ok=True)
        calib = self.calib_images() if precision.startswith("int8") and self.calib_images is not None else None
        options = autopilot_options(calib) if precision == "int8-auto" else {"precision": precision}
        try:
            return Path(self._exporter()(model, path, size=self.size, calib_images=calib, **options))
        except Exception as exc:  # a failed export skips this backend, with the reason in the report
            self.failures[path] = f"{precision} export failed: {_first_line(exc)}"
            raise Skipped(self.failures[path]) from exc

    def engine(self, model: Any, key: str) -> Path:
        """A TensorRT engine built from the fp32 ONNX file (FP16 enabled), cached like the ONNX files."""
        from export.tensorrt import build_engine

        onnx_path = self.onnx(model, key, "fp32")
        path = onnx_path.with_suffix(".engine")
        if not path.exists():
            shape = (1, 3, *self.size)
            build_engine(onnx_path, path, fp16=True, min_shape=shape, opt_shape=shape, max_shape=shape)
        return path

    def _exporter(self) -> Exporter:
        if self.exporter is None:
            from export.onnx import export_onnx

            self.exporter = export_onnx
        return self.exporter


def autopilot_options(calib: Iterable[np.ndarray] | None) -> dict[str, Any]:
    """Export options of `int8-auto`: a quarter of the calibration images (at least one) are held out."""
    count = len(list(calib)) if calib is not None else 0
    held = max(1, count // 4)
    return {"precision": "int8", "min_agreement": AUTO_AGREEMENT, "calib_count": count - held, "heldout_count": held}


def open_runner(backend: str, model: Any, key: str, cache: ArtifactCache, device: str, threads: int) -> Runner:
    """Build the runner of `backend` for `model` (exporting what it needs); `Skipped` with the reason if it can't."""
    if backend == "torch":
        return TorchRunner(model, device)
    if backend == "tensorrt":
        reason = tensorrt_unavailable()
        if reason is not None:
            raise Skipped(reason)
        if device != "cuda":
            raise Skipped("tensorrt runs on a GPU only (use --device cuda)")
        return RuntimeRunner(backend, cache.engine(model, key), "cuda", threads)
    if backend in ONNX_PRECISION:
        return RuntimeRunner(backend, cache.onnx(model, key, ONNX_PRECISION[backend]), device, threads)
    raise ValueError(f"unknown backend {backend!r}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
