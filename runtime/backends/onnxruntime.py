"""ONNX Runtime backend: TensorRT EP > CUDA EP > CPU, intra-op thread count, IO binding on CUDA.

ONNX Runtime falls back quietly: a GPU build lists the TensorRT EP even where TensorRT cannot load, and when
an EP fails at session creation its Python layer prints the error on stdout and retries on fewer providers.
So the TensorRT EP is offered only when TensorRT loads, ONNX Runtime's prints go to stderr, and the session's
providers are checked after creation (`--device cuda` that ends on the CPU is an error).
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.artifact import ModelMetadata, Overrides, check_io_shapes, metadata_from_props
from runtime.backends.base import Backend, as_output, choose_output, crop_output, pad_batch
from runtime.cpu import EXACT_SUMS, int8_notice, needs_exact_sums
from runtime.errors import UserError

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = PREFERENCE[:2]
_SAID: set[str] = set()  # notices already printed by this process (a stream opens one model per worker)


def choose_providers(device: str, available: Sequence[str], tensorrt_loads: bool = True) -> list[str]:
    """Providers for `device` in preference order, from those the installed ONNX Runtime build has.

    `tensorrt_loads`: whether TensorRT itself can load here; without it the TensorRT EP is not offered (a GPU
    build lists it regardless, then fails at session creation).
    """
    if device == "cpu":
        return ["CPUExecutionProvider"]
    gpu = [p for p in GPU_PROVIDERS if p in available and (tensorrt_loads or p != "TensorrtExecutionProvider")]
    if device == "cuda" and not gpu:
        raise UserError(
            "CUDA is not available in this ONNX Runtime build",
            f"providers: {', '.join(available)}; install onnxruntime-gpu",
        )
    return [*gpu, "CPUExecutionProvider"]


def check_providers(device: str, requested: Sequence[str], active: Sequence[str], where: str) -> str | None:
    """Refuse a session that ended on the CPU although `device` is `cuda`; a warning (or None) when a
    requested GPU provider was dropped on the way (`auto`, or a CUDA session without the TensorRT EP)."""
    dropped = [p for p in requested if p in GPU_PROVIDERS and p not in active]
    if device == "cuda" and not any(p in GPU_PROVIDERS for p in active):
        raise UserError(
            f"--device cuda, but ONNX Runtime could not start {' or '.join(dropped) or 'a GPU provider'} "
            f"and runs on {', '.join(active)}: check the CUDA/cuDNN libraries that onnxruntime-gpu needs, "
            "or use --device cpu",
            where,
        )
    if dropped:
        return f"warning: ONNX Runtime could not start {', '.join(dropped)}; running on {', '.join(active)}"
    return None


def content_key(model: Path, fp16: bool) -> str:
    """What an engine built from `model` depends on: the bytes of the file (and of its external data file
    `<name>.data`, when there is one) and the precision. A re-export to the same path changes the key."""
    digest = hashlib.sha256()
    for part in (model, model.with_name(model.name + ".data")):
        if part.is_file():
            with part.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return f"{digest.hexdigest()[:16]}-{'fp16' if fp16 else 'fp32'}"


def provider_options(
    providers: Sequence[str], model: Path, fp16: bool = False, device_id: int = 0
) -> list[dict[str, str]]:
    """Options per provider: the TensorRT EP caches its engines beside the model, in a folder keyed by the
    model's content and precision (the EP names its engines by file name and graph, not weights), and its
    timing beside them (else every start rebuilds them, which takes minutes); `fp16` enables its FP16 kernels
    (without it even an fp16 graph runs in FP32 there). Both GPU providers run on GPU `device_id`; the CPU keeps
    its defaults."""
    cache = model.parent / f".{model.stem}.trt-cache"
    tensorrt = {
        "trt_fp16_enable": "True" if fp16 else "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache / content_key(model, fp16)),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "device_id": str(device_id),
    }
    cuda = {"device_id": str(device_id)}
    return [{"TensorrtExecutionProvider": tensorrt, "CUDAExecutionProvider": cuda}.get(p, {}) for p in providers]


def create_cache_folders(options: Sequence[dict[str, str]], where: str) -> None:
    """Create the TensorRT EP's cache folders named in `options`, parents included: the EP creates only the
    last level (`fs::create_directory` in its constructor, onnxruntime/core/providers/tensorrt/
    tensorrt_execution_provider.cc), so `.NAME.trt-cache/<key>` would fail on a first run and the session
    would fall back to the CUDA EP."""
    for option in options:
        for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
            if key in option:
                try:
                    Path(option[key]).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise UserError(
                        f"cannot create the TensorRT engine cache {option[key]}: {exc.strerror or exc}",
                        f"{where} (the TensorRT EP caches its engines beside the model: make its folder writable)",
                    ) from None


def load_session(
    path: Path,
    providers: Sequence[str],
    threads: int | None = None,
    spinning: bool = False,
    fp16: bool = False,
    device_id: int = 0,
    exact_int8: bool = False,
) -> ort.InferenceSession:
    """An `InferenceSession`, with a corrupt or unreadable file reported as one line. ONNX Runtime's
    fallback notice (printed on stdout) goes to stderr, so that stdout stays the command's own.
    `exact_int8`: int8 weights run as uint8 on the CPU (`runtime.cpu.EXACT_SUMS`)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if exact_int8:
        options.add_session_config_entry(*EXACT_SUMS)
    if threads is not None:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    per_provider = provider_options(providers, path, fp16, device_id)
    create_cache_folders(per_provider, str(path))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return ort.InferenceSession(
                str(path), sess_options=options, providers=list(providers), provider_options=per_provider
            )
    except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load ONNX model: {reason}", str(path)) from None


def read_onnx_metadata(path: Path, overrides: Overrides | None = None) -> ModelMetadata:
    """An ONNX file's metadata, read through a CPU session (no `onnx` import)."""
    session = load_session(path, ["CPUExecutionProvider"])
    return metadata_from_props(session.get_modelmeta().custom_metadata_map, str(path), overrides)


class OnnxRuntimeBackend(Backend):
    """An ONNX model in ONNX Runtime.

    `io_binding`: bind input and output buffers (default: on when a GPU provider runs the model, so the output
    is copied back once, without ONNX Runtime's extra staging copies). `spinning` (off by default): let idle
    intra-op threads busy-wait for work. Off, they leave the cores to a stream's decode/encode threads and to
    other processes; on a 2-core box that made the stream as fast as the backend alone (DESIGN.md, Runtime).
    `fp16`: let the TensorRT EP use FP16 kernels (for an fp32 graph as for an fp16 one). `device_id`: the GPU
    the GPU providers run on.
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
        fp16: bool = False,
        device_id: int = 0,
    ) -> None:
        path = Path(path)
        available = ort.get_available_providers()
        chosen = list(providers) if providers else choose_providers(device, available, _tensorrt_loads(available))
        missing = [p for p in chosen if p not in available]
        if missing:
            raise UserError(
                f"ONNX Runtime provider {missing[0]} is not available", f"available: {', '.join(available)}"
            )
        self.session = load_session(path, chosen, threads, spinning, fp16, device_id)
        props = self.session.get_modelmeta().custom_metadata_map
        on_gpu = self.session.get_providers()[0] in GPU_PROVIDERS
        if not on_gpu and needs_exact_sums(props):  # int8 weights where u8 x s8 sums saturate: runtime/cpu.py
            self.session = load_session(path, chosen, threads, spinning, fp16, device_id, exact_int8=True)
        self.session.disable_fallback()  # a provider failing at run time raises instead of switching silently
        self.providers: list[str] = self.session.get_providers()
        notice = check_providers(device, chosen, self.providers, str(path))
        if notice:
            print(notice, file=sys.stderr)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if not inputs:  # a graph of constants: nothing to feed the frames to
            raise UserError("the model has no input: cfnet feeds it N x 3 x H x W images", str(path))
        self.input_name = next((i.name for i in inputs if i.name == "images"), inputs[0].name)
        self.outputs = tuple(o.name for o in outputs)
        self.output = choose_output(self.outputs)
        shape = next(i.shape for i in inputs if i.name == self.input_name)
        static = (shape[2], shape[3]) if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]) else None
        self.fixed_size: tuple[int, int] | None = static
        self.max_batch: int | None = shape[0] if shape and isinstance(shape[0], int) else None  # static N
        self.metadata: ModelMetadata = metadata_from_props(props, str(path), overrides, static)
        output_shape = next(o.shape for o in outputs if o.name == self.output)
        check_io_shapes(shape, output_shape, self.metadata, str(path), mask=self.output == "mask")
        self._output_checked = False  # a dynamic class dimension is checked on the first output
        notice = None if on_gpu else int8_notice(props, str(path))
        if notice and notice not in _SAID:
            _SAID.add(notice)
            print(notice, file=sys.stderr)
        self.io_binding = on_gpu if io_binding is None else io_binding
        self.device = "cuda" if on_gpu else "cpu"  # where the model runs (the stream batches on a GPU only)
        self.concurrent = True  # `InferenceSession.run` may be called from several threads at once
        self.name = f"onnxruntime[{self.providers[0]}]"
        self.path = str(path)

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
            out: Any = self.session.run([self.output], {self.input_name: images})[0]
            output = as_output(np.asarray(out))
        else:
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, images)
            binding.bind_output(self.output, self.device)
            self.session.run_with_iobinding(binding)
            output = as_output(np.asarray(binding.copy_outputs_to_cpu()[0]))
        if not self._output_checked:
            check_io_shapes(images.shape, output.shape, self.metadata, str(self.path), mask=output.dtype == np.uint8)
            self._output_checked = True
        return crop_output(output, size, (images.shape[2], images.shape[3]))

    def close(self) -> None:
        """Release the session."""
        self.__dict__.pop("session", None)


def _tensorrt_loads(available: Sequence[str]) -> bool:
    """Whether the TensorRT EP can be offered: listed by ONNX Runtime and TensorRT itself loads."""
    if "TensorrtExecutionProvider" not in available:
        return False
    from runtime.backends.availability import tensorrt_unavailable

    return tensorrt_unavailable() is None
