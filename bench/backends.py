"""The runners per backend: PyTorch eager, ONNX Runtime (fp32, fp16, int8) and TensorRT, built once per model.

Every runner takes a float32 `N x 3 x H x W` array and returns what its model returns (float32 logits, or the
uint8 mask of a `+mask` backend), synchronously (a GPU runner has finished when `infer` returns), so that the
timing loop can treat them all alike. `NAME+mask` runs the export with `--output mask` (in-graph argmax).
A backend that cannot run here raises `Skipped` with the reason, which the report shows in its row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8", "onnxruntime-fp16", "tensorrt",
            "onnxruntime+mask", "tensorrt+mask")
ONNX_PRECISION = {"onnxruntime": "fp32", "onnxruntime-fp16": "fp16", "onnxruntime-int8": "int8", "tensorrt": "fp32"}

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
        return self.backend.infer(images)

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
        path = self.folder / f"{key}-{self.size[0]}x{self.size[1]}-{precision}.onnx"
        if path in self.failures:
            raise Skipped(self.failures[path])
        if path.exists():
            return path
        self.folder.mkdir(parents=True, exist_ok=True)
        calib = self.calib_images() if precision == "int8" and self.calib_images is not None else None
        try:
            return Path(self._exporter()(model, path, size=self.size, precision=precision, calib_images=calib))
        except Exception as exc:  # a failed export skips this backend, with the reason in the report
            self.failures[path] = f"{precision} export failed: {_first_line(exc)}"
            raise Skipped(self.failures[path]) from exc

    def engine(self, model: Any, key: str, output: str = "logits") -> Path:
        """A TensorRT engine built from the fp32 ONNX file (FP16 enabled), cached like the ONNX files."""
        from export.tensorrt import build_engine

        onnx_path = self.onnx(model, key, "fp32", output)
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


def split_backend(backend: str) -> tuple[str, str]:
    """`onnxruntime+mask` -> (`onnxruntime`, `mask`); `tensorrt` -> (`tensorrt`, `logits`)."""
    base, _, variant = backend.partition("+")
    return base, variant or "logits"


def artifact(backend: str, model: Any, key: str, cache: ArtifactCache, device: str) -> Path:
    """The file a runtime backend serves (ONNX, or a TensorRT engine), exported on first use; `Skipped` if it
    cannot be made or run here."""
    base, output = split_backend(backend)
    if base == "tensorrt":
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
    if backend == "torch":
        return TorchRunner(model, device)
    path = artifact(backend, model, key, cache, device)
    return RuntimeRunner(backend, path, "cuda" if split_backend(backend)[0] == "tensorrt" else device, threads)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
