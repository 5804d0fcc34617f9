"""The `Backend` protocol every runtime implements (as Polygraphy's runners), and `open_backend` by artifact type."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from runtime.artifact import ModelMetadata, Overrides
from runtime.errors import UserError

DEVICES = ("auto", "cpu", "cuda")
T = TypeVar("T")


@runtime_checkable
class Backend(Protocol):
    """A loaded model: `infer(images)` maps normalised `N x 3 x H x W` float32 to what the model returns:
    `N x C x H x W` float32 logits or, from a model with a `mask` output, `N x H x W` uint8 class ids.
    `runtime.postprocess.postprocess` turns either into the frames' masks."""

    metadata: ModelMetadata
    name: str

    def infer(self, images: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...

    def __enter__(self: T) -> T: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class Closing:
    """Context-manager behaviour shared by the backends: `with open_backend(...) as b:` closes `b` on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def pad_batch(images: np.ndarray, min_size: tuple[int, int]) -> np.ndarray:
    """Zero-pad `N x 3 x H x W` bottom/right to at least `min_size` (H, W): for models with a fixed input size."""
    h, w = images.shape[2:]
    if h >= min_size[0] and w >= min_size[1]:
        return images
    padded = np.zeros((*images.shape[:2], max(h, min_size[0]), max(w, min_size[1])), dtype=images.dtype)
    padded[:, :, :h, :w] = images
    return padded


def crop_output(output: np.ndarray, size: tuple[int, int], padded: tuple[int, int]) -> np.ndarray:
    """The output (logits `N x C x h x w` or mask `N x h x w`, maybe smaller than the input) of the top-left
    `size` of an input that `pad_batch` grew to `padded`."""
    if size == padded:
        return output
    rows = -(-size[0] * output.shape[-2] // padded[0])
    cols = -(-size[1] * output.shape[-1] // padded[1])
    return np.ascontiguousarray(output[..., :rows, :cols])


def choose_output(names: Sequence[str]) -> str:
    """The output a backend returns: `mask` when the model has one (no host argmax), else `logits`, else the first."""
    return next((n for n in ("mask", "logits") if n in names), names[0])


def as_output(array: np.ndarray) -> np.ndarray:
    """A model output as the runtime hands it on: a uint8 mask as it is, scores as float32."""
    return array if array.dtype == np.uint8 else array.astype(np.float32, copy=False)


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
        from runtime.triton_backend import TritonBackend

        return TritonBackend(str(path), overrides=overrides)
    path = Path(path)
    if device not in DEVICES:
        raise UserError(f"unknown device '{device}'", f"choose from {', '.join(DEVICES)}")
    if not path.is_file():
        raise UserError("model not found", str(path))
    if path.suffix == ".onnx":
        from runtime.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(
            path, device=device, providers=providers, threads=threads, overrides=overrides, spinning=spinning,
            fp16=fp16,
        )
    if path.suffix in (".engine", ".plan"):
        if device == "cpu":
            raise UserError("a TensorRT engine runs on a GPU only; use the ONNX model for --device cpu", str(path))
        from runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path, overrides=overrides)
    raise UserError(f"unknown model file type '{path.suffix}': expected .onnx or .engine", str(path))
