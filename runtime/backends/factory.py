"""`open_backend`: the one place that maps an artifact (a path or a URL) to the backend that runs it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from runtime.artifact import ModelMetadata, Overrides, metadata_from_props, read_sidecar
from runtime.backends.base import Backend
from runtime.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def open_backend(
    path: str | Path,
    device: str = "auto",
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    overrides: Overrides | None = None,
    spinning: bool = False,
    fp16: bool = False,
) -> Backend:
    """Load an artifact: `.onnx` -> ONNX Runtime, `.engine`/`.plan` -> native TensorRT, `grpc://HOST:PORT/NAME` ->
    a Triton server's `cfnet export triton` models.

    `device`: `auto` (best available), `cpu` or `cuda`; `providers` overrides ONNX Runtime's provider list;
    `threads` sets ONNX Runtime's intra-op threads and `spinning` lets them busy-wait between ops (off: better
    when decode/encode threads or other processes share the cores); `overrides` replaces or supplies metadata;
    `fp16` lets ONNX Runtime's TensorRT EP use FP16 kernels (a TensorRT engine has its precision built in).
    """
    if str(path).startswith("grpc:"):
        from runtime.backends.triton import TritonBackend

        return TritonBackend(str(path), overrides=overrides)
    path = Path(path)
    if device not in DEVICES:
        raise UserError(f"unknown device '{device}'", f"choose from {', '.join(DEVICES)}")
    if not path.is_file():
        raise UserError("model not found", str(path))
    if path.suffix == ".onnx":
        from runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(
            path,
            device=device,
            providers=providers,
            threads=threads,
            overrides=overrides,
            spinning=spinning,
            fp16=fp16,
        )
    if path.suffix in (".engine", ".plan"):
        if device == "cpu":
            raise UserError("a TensorRT engine runs on a GPU only; use the ONNX model for --device cpu", str(path))
        from runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(path, overrides=overrides)
    raise UserError(f"unknown model file type '{path.suffix}': expected .onnx or .engine", str(path))


def read_metadata(path: str | Path, overrides: Overrides | None = None) -> ModelMetadata:
    """An artifact's metadata without loading the model for inference: an ONNX file's `cfnet.*` properties
    (through ONNX Runtime, no `onnx` import) or an engine's `.json` sidecar (no TensorRT needed)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("model not found", str(path))
    if path.suffix == ".onnx":
        from runtime.backends.onnxruntime import read_onnx_metadata

        return read_onnx_metadata(path, overrides)
    return metadata_from_props(read_sidecar(path), str(path), overrides)


def available_backends() -> dict[str, str | None]:
    """Each backend's name -> why it cannot run here, or None when it can."""
    from runtime.backends.availability import UNAVAILABLE

    return {name: check() for name, check in UNAVAILABLE.items()}
