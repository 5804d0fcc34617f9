"""Torch-free serving: artifacts, backends (ONNX Runtime, TensorRT), pre/post-processing, video streams.

Needs numpy, OpenCV and ONNX Runtime (TensorRT + pycuda for engines); never torch or the train-time packages.
The names below load on first use, so `import runtime.cli` (the CLI's face) stays light. Pre/post-processing
lives in `runtime.preprocess.preprocess` and `runtime.postprocess` (module and function share those names).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.artifact import ModelMetadata, Overrides
    from runtime.backends import Backend, open_backend, read_metadata
    from runtime.errors import UserError
    from runtime.segmentation import segment
    from runtime.stream import RunStats, StreamStats, run_stream, run_streams

_HOMES = {
    "ModelMetadata": "runtime.artifact",
    "Overrides": "runtime.artifact",
    "read_metadata": "runtime.backends",
    "Backend": "runtime.backends",
    "open_backend": "runtime.backends",
    "UserError": "runtime.errors",
    "segment": "runtime.segmentation",
    "RunStats": "runtime.stream",
    "StreamStats": "runtime.stream",
    "run_stream": "runtime.stream",
    "run_streams": "runtime.stream",
}
__all__ = [
    "Backend",
    "ModelMetadata",
    "Overrides",
    "RunStats",
    "StreamStats",
    "UserError",
    "open_backend",
    "read_metadata",
    "run_stream",
    "run_streams",
    "segment",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'runtime' has no attribute '{name}'")
    return getattr(importlib.import_module(_HOMES[name]), name)
