"""One availability check per backend: why it cannot run on this machine, or None when it can.

Every caller (the factory's `available_backends`, the ONNX Runtime backend deciding whether to offer the
TensorRT EP, the native TensorRT backend, export's engine builder, bench's rows) asks here.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable


def onnxruntime_unavailable() -> str | None:
    """Why ONNX Runtime cannot run here (not installed), or None."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install 'cfnet[cpu]' or 'cfnet[gpu]')"
    return None


@functools.cache
def tensorrt_unavailable() -> str | None:
    """Why TensorRT cannot run here, or None when it can: a working `tensorrt.Builder` (which needs the
    libraries, a driver and a GPU). `import tensorrt` alone also succeeds on the stubs' namespace package."""
    try:
        import tensorrt as trt
    except ImportError:
        return "tensorrt is not installed (pip install 'cfnet[tensorrt]' on a machine with an NVIDIA GPU)"
    if not hasattr(trt, "Builder"):
        return "tensorrt is not installed (only its type stubs are)"
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # the builder needs a driver and a GPU
        return f"tensorrt.Builder fails: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc!r}"
    if builder is None:
        return "tensorrt.Builder could not be created (no CUDA device)"
    return None


def triton_unavailable() -> str | None:
    """Why the Triton client cannot run here (tritonclient's gRPC client is not installed), or None."""
    try:
        importlib.import_module("tritonclient.grpc")
    except ImportError:
        return "tritonclient is not installed (pip install 'cfnet[serve]')"
    return None


UNAVAILABLE: dict[str, Callable[[], str | None]] = {
    "onnxruntime": onnxruntime_unavailable,
    "tensorrt": tensorrt_unavailable,
    "triton": triton_unavailable,
}
