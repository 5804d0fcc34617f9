"""Native TensorRT backend (TensorRT >= 10 tensor API) with pycuda page-locked buffers and one stream."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.artifact import (
    ModelMetadata,
    Overrides,
    check_io_shapes,
    metadata_from_props,
    read_sidecar,
    sidecar_path,
)
from runtime.backends.availability import tensorrt_unavailable
from runtime.backends.base import Backend, as_output, choose_output, crop_output, pad_batch
from runtime.errors import UserError

if TYPE_CHECKING:
    import tensorrt as trt

COMPAT = ("none", "hardware", "version")
"""An engine's portability (`build-engine --compat`): `none` runs on the GPU model and TensorRT version that built
it; `hardware` (TensorRT's HardwareCompatibilityLevel.AMPERE_PLUS) on any GPU of compute capability >= 8.0 with
that TensorRT version; `version` (BuilderFlag.VERSION_COMPATIBLE) on that GPU with that TensorRT or a later one."""
AMPERE = (8, 0)


def load_tensorrt() -> trt.ILogger:
    """A logger of a working TensorRT, or `UserError("TensorRT is not available", reason)` (`tensorrt_unavailable`)."""
    reason = tensorrt_unavailable()
    if reason is not None:
        raise UserError("TensorRT is not available", reason)
    import tensorrt

    return tensorrt.Logger(tensorrt.Logger.WARNING)


def load_cuda() -> tuple[Any, Any]:
    """`(pycuda.driver, context on GPU 0)` with the context popped, or `UserError("TensorRT is not available", ...)`."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise UserError("TensorRT is not available", "pycuda is not installed; pip install 'cfnet[tensorrt]'") from None
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            raise RuntimeError("no CUDA device")
        context = cuda.Device(0).make_context()
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError without a driver or GPU
        raise UserError("TensorRT is not available", f"no usable CUDA GPU: {exc}") from None
    context.pop()
    return cuda, context


def check_compatible(
    sidecar: Mapping[str, Any], tensorrt_version: str, gpu_name: str, compute_capability: str, engine: str = "ENGINE"
) -> None:
    """Refuse an engine that this TensorRT version or GPU cannot run, given the compatibility it was built with
    (sidecar `compat`, `none` when absent), naming both sides and the command that fixes it.

    Fields the sidecar lacks or records as `unknown...` (the builder could not query the GPU) are not compared.
    """
    compat = str(sidecar.get("compat", "none"))
    rebuild = f"rebuild it on this machine: cfnet build-engine {sidecar.get('onnx') or 'MODEL.onnx'} --out {engine}"
    built_version = _recorded(sidecar.get("tensorrt_version"))
    if built_version and compat == "version":
        if _version(tensorrt_version) < _version(built_version):
            raise UserError(
                f"engine was built (version-compatible) with TensorRT {built_version}, which runs on that version "
                f"or later; this is TensorRT {tensorrt_version}: upgrade TensorRT, or {rebuild}",
                "sidecar",
            )
    elif built_version and built_version != tensorrt_version:
        raise UserError(
            f"engine was built with TensorRT {built_version}, this is TensorRT {tensorrt_version}; {rebuild} "
            "(add --compat version for an engine that later TensorRT versions also run)",
            "sidecar",
        )
    built_gpu = _recorded(sidecar.get("gpu_name"))
    built_cc = _recorded(sidecar.get("compute_capability"))
    if compat == "hardware":
        capability = parse_capability(compute_capability)
        if capability is not None and capability < AMPERE:
            raise UserError(
                f"engine was built for Ampere and newer GPUs (compute >= 8.0), this GPU is {gpu_name} "
                f"(compute {compute_capability}); {rebuild} --compat none",
                "sidecar",
            )
    elif (built_gpu and built_gpu != gpu_name) or (built_cc and built_cc != compute_capability):
        raise UserError(
            f"engine was built for {built_gpu or '?'} (compute {built_cc or '?'}), this GPU is {gpu_name} "
            f"(compute {compute_capability}); {rebuild} "
            "(or build with --compat hardware on an Ampere-or-newer GPU for one engine that runs on all of them)",
            "sidecar",
        )


def parse_capability(value: Any) -> tuple[int, int] | None:
    """A compute capability `8.6` (or `[8, 6]`) as (8, 6); None when unknown."""
    parts = _recorded(value).split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def _version(text: str) -> tuple[int, ...]:
    """`10.13.0.35` -> (10, 13, 0, 35); non-numeric parts end it."""
    numbers: list[int] = []
    for part in text.split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def _recorded(value: Any) -> str:
    """A sidecar field as text; empty when absent or unknown. A capability list `[8, 6]` becomes `8.6`."""
    if isinstance(value, list | tuple):
        value = ".".join(str(v) for v in value)
    text = "" if value is None else str(value)
    return "" if text.startswith("unknown") else text


class TensorRTBackend(Backend):
    """A serialized TensorRT engine with its `.engine.json` sidecar (metadata, TensorRT version, GPU)."""

    def __init__(self, path: str | Path, overrides: Overrides | None = None) -> None:
        path = Path(path)
        sidecar = read_sidecar(path)
        self.metadata: ModelMetadata = metadata_from_props(sidecar, str(path), overrides)
        logger = load_tensorrt()
        import tensorrt as trt

        self._cuda, self._context = load_cuda()
        self._context.push()
        try:
            device = self._context.get_device()
            major, minor = device.compute_capability()
            try:
                check_compatible(sidecar, trt.__version__, device.name(), f"{major}.{minor}", str(path))
            except UserError as exc:
                raise UserError(exc.what, str(sidecar_path(path))) from None
            runtime = trt.Runtime(logger)
            # a version-compatible plan carries its own lean runtime: host code, from a plan this project built
            runtime.engine_host_code_allowed = sidecar.get("compat") == "version"
            self._engine: trt.ICudaEngine = runtime.deserialize_cuda_engine(path.read_bytes())
            if self._engine is None:
                raise UserError(
                    f"TensorRT {trt.__version__} cannot deserialize the engine (built with TensorRT "
                    f"{sidecar.get('tensorrt_version', '?')} on {sidecar.get('gpu_name', '?')})",
                    str(path),
                )
            self._exec: trt.IExecutionContext = self._engine.create_execution_context()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            self.input_name = "images" if "images" in inputs else inputs[0]
            self.outputs = tuple(outputs)
            self.output = choose_output(self.outputs)
            check_io_shapes(
                self._engine.get_tensor_shape(self.input_name)[:],
                self._engine.get_tensor_shape(self.output)[:],
                self.metadata,
                str(path),
                mask=self.output == "mask",
            )
            low, _, high = self._engine.get_tensor_profile_shape(self.input_name, 0)
            self._min_size = (int(low[2]), int(low[3]))
            self._max_size = (int(high[2]), int(high[3]))
            self.max_batch = int(high[0])  # the profile's largest batch
            self._in_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self.input_name)))
            self._out_dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in self.outputs}
            self._stream = self._cuda.Stream()
        except BaseException:
            self._context.pop()
            self._context.detach()
            raise
        self._context.pop()
        self._buffers: dict[str, tuple[Any, Any, int]] = {}
        self.name = f"tensorrt[{trt.__version__}]"
        self.path = str(path)
        self.device = "cuda"
        self.concurrent = False  # one execution context, one stream

    def _buffer(self, name: str, count: int, dtype: np.dtype, host: bool = True) -> tuple[Any, Any]:
        """Device buffer for `name` (and a page-locked host one unless `host` is False: an output nobody reads),
        grown when a larger shape arrives."""
        pinned, dev, capacity = self._buffers.get(name, (None, None, 0))
        if capacity < count:
            pinned = self._cuda.pagelocked_empty(count, dtype) if host else None
            dev = self._cuda.mem_alloc(count * dtype.itemsize)
            self._buffers[name] = (pinned, dev, count)
        return pinned, dev

    def _bind_outputs(self) -> tuple[Any, Any, tuple[int, ...]]:
        """Set an address for every output, once the input shape is set: the chosen one's buffers, a scratch
        device buffer for each other one (an engine exported with `--output both`). TensorRT's
        `setTensorAddress`: "Before calling enqueueV3(), each input must have a non-null address and each
        output must have a non-null address or an IOutputAllocator" (NvInferRuntime.h, 10.0 to 11.x).
        Returns the chosen output's host and device buffers and its shape."""
        bound = {}
        for name in self.outputs:
            dims = self._exec.get_tensor_shape(name)
            shape = tuple(int(dims[i]) for i in range(len(dims)))
            host, dev = self._buffer(name, int(np.prod(shape)), self._out_dtypes[name], host=name == self.output)
            self._exec.set_tensor_address(name, int(dev))
            bound[name] = host, dev, shape
        return bound[self.output]

    def infer(self, images: np.ndarray) -> np.ndarray:
        """`N x 3 x H x W` float32 -> `N x C x H x W` float32 logits, or `N x H x W` uint8 from a mask engine
        (within the engine's profile): only the mask then crosses PCIe."""
        size = (images.shape[2], images.shape[3])
        if size[0] > self._max_size[0] or size[1] > self._max_size[1]:
            raise UserError(
                f"input {size[0]}x{size[1]} exceeds the engine's profile "
                f"(max {self._max_size[0]}x{self._max_size[1]}); lower --input-size or rebuild with larger --max-shape",
                str(self.path),
            )
        images = np.ascontiguousarray(pad_batch(images, self._min_size), dtype=self._in_dtype)
        self._context.push()
        try:
            if not self._exec.set_input_shape(self.input_name, images.shape):
                raise UserError(f"input shape {images.shape} is outside the engine's profile", str(self.path))
            host_in, dev_in = self._buffer(self.input_name, images.size, self._in_dtype)
            host_out, dev_out, out_shape = self._bind_outputs()
            np.copyto(host_in[: images.size], images.ravel())
            self._cuda.memcpy_htod_async(dev_in, host_in[: images.size], self._stream)
            self._exec.set_tensor_address(self.input_name, int(dev_in))
            if not self._exec.execute_async_v3(self._stream.handle):
                raise UserError("TensorRT execution failed", str(self.path))
            count = int(np.prod(out_shape))
            self._cuda.memcpy_dtoh_async(host_out[:count], dev_out, self._stream)
            self._stream.synchronize()
            output = as_output(host_out[:count].reshape(out_shape).copy())
            check_io_shapes(images.shape, output.shape, self.metadata, str(self.path), mask=output.dtype == np.uint8)
            return crop_output(output, size, (images.shape[2], images.shape[3]))
        finally:
            self._context.pop()

    def close(self) -> None:
        """Free the buffers, the stream, the engine and the CUDA context (in that context)."""
        if getattr(self, "_context", None) is None:
            return
        self._context.push()
        self._buffers.clear()
        self.__dict__.pop("_stream", None)
        self.__dict__.pop("_exec", None)
        self.__dict__.pop("_engine", None)
        self._context.pop()
        self._context.detach()
        self._context = None
