"""ONNX Runtime backend: TensorRT EP > CUDA EP > CPU, intra-op thread count, IO binding on CUDA."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.artifact import ModelMetadata, Overrides, metadata_from_props
from runtime.backend import Closing, as_output, choose_output, crop_output, pad_batch
from runtime.errors import UserError

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = PREFERENCE[:2]


def choose_providers(device: str, available: Sequence[str]) -> list[str]:
    """Providers for `device` in preference order, from those the installed ONNX Runtime build has."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device == "cuda" and not gpu:
        raise UserError(
            "CUDA is not available in this ONNX Runtime build",
            f"providers: {', '.join(available)}; install onnxruntime-gpu",
        )
    return [*gpu, "CPUExecutionProvider"]


def provider_options(providers: Sequence[str], model: Path) -> list[dict[str, str]]:
    """Options per provider: the TensorRT EP caches its engines and timing beside the model (else every start
    rebuilds them, which takes minutes); the others keep their defaults."""
    cache = str(model.parent / f".{model.stem}.trt-cache")
    tensorrt = {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": cache,
    }
    return [tensorrt if p == "TensorrtExecutionProvider" else {} for p in providers]


def load_session(
    path: Path, providers: Sequence[str], threads: int | None = None, spinning: bool = False
) -> ort.InferenceSession:
    """An `InferenceSession`, with a corrupt or unreadable file reported as one line."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=list(providers),
            provider_options=provider_options(providers, path),
        )
    except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load ONNX model: {reason}", str(path)) from None


class OnnxRuntimeBackend(Closing):
    """An ONNX model in ONNX Runtime.

    `io_binding`: bind input and output buffers (default: on when a GPU provider runs the model, so the output
    is copied back once, without ONNX Runtime's extra staging copies). `spinning` (off by default): let idle
    intra-op threads busy-wait for work. Off, they leave the cores to a stream's decode/encode threads and to
    other processes; on a 2-core box that made the stream as fast as the backend alone (DESIGN.md, Runtime).
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        overrides: Overrides | None = None,
        io_binding: bool | None = None,
        spinning: bool = False,
    ) -> None:
        path = Path(path)
        available = ort.get_available_providers()
        chosen = list(providers) if providers else choose_providers(device, available)
        missing = [p for p in chosen if p not in available]
        if missing:
            raise UserError(
                f"ONNX Runtime provider {missing[0]} is not available", f"available: {', '.join(available)}"
            )
        self.session = load_session(path, chosen, threads, spinning)
        self.providers: list[str] = self.session.get_providers()
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_name = next((i.name for i in inputs if i.name == "images"), inputs[0].name)
        self.output_name = choose_output([o.name for o in outputs])
        shape = next(i.shape for i in inputs if i.name == self.input_name)
        static = (shape[2], shape[3]) if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]) else None
        self.fixed_size: tuple[int, int] | None = static
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: ModelMetadata = metadata_from_props(props, str(path), overrides, static)
        on_gpu = self.providers[0] in GPU_PROVIDERS
        self.io_binding = on_gpu if io_binding is None else io_binding
        self._device = "cuda" if on_gpu else "cpu"
        self.name = f"onnxruntime[{self.providers[0]}]"
        self.path = path

    def infer(self, images: np.ndarray) -> np.ndarray:
        """`N x 3 x H x W` float32 -> `N x C x H x W` float32 logits, or `N x H x W` uint8 from a mask model.

        A model with a fixed input size gets the batch zero-padded to it, and the output cropped back.
        """
        images = np.ascontiguousarray(images, dtype=np.float32)
        size = (images.shape[2], images.shape[3])
        if self.fixed_size is not None:
            if size[0] > self.fixed_size[0] or size[1] > self.fixed_size[1]:
                raise UserError(
                    f"input {size[0]}x{size[1]} exceeds the model's fixed input size "
                    f"{self.fixed_size[0]}x{self.fixed_size[1]}; lower --input-size",
                    str(self.path),
                )
            images = pad_batch(images, self.fixed_size)
        if not self.io_binding:
            out: Any = self.session.run([self.output_name], {self.input_name: images})[0]
            output = as_output(np.asarray(out))
        else:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, images)
            binding.bind_output(self.output_name, self._device)
            self.session.run_with_iobinding(binding)
            output = as_output(np.asarray(binding.copy_outputs_to_cpu()[0]))
        return crop_output(output, size, (images.shape[2], images.shape[3]))

    def close(self) -> None:
        """Release the session."""
        self.__dict__.pop("session", None)
