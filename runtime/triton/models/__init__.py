"""The Python-backend models of a Triton repository written by `cfnet export triton`.

Each model's `1/model.py` is a three-line shim that puts the repository's copy of this `runtime` package
first on `sys.path` and imports `TritonPythonModel` from here, so the server runs the runtime's own
pre/post-processing (one implementation everywhere). `triton_python_backend_utils` exists only inside
Triton's Python-backend stub: it is imported when a model is initialised, never at import time.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from runtime.preprocess import FrameInfo

INFO = "info"  # per frame: frame H, W, resized H, W, model input H, W (int32)


def triton_utils() -> ModuleType:
    """`triton_python_backend_utils`, present only inside Triton's Python-backend stub."""
    return importlib.import_module("triton_python_backend_utils")


def infos_to_array(infos: Sequence[FrameInfo]) -> np.ndarray:
    """`FrameInfo`s -> an `N x 6` int32 array (the `info` tensor the preprocess model hands on)."""
    return np.asarray([[*i.frame_size, *i.resized_size, *i.input_size] for i in infos], dtype=np.int32).reshape(-1, 6)


def infos_from_array(array: np.ndarray) -> list[FrameInfo]:
    """The inverse of `infos_to_array`."""
    return [
        FrameInfo(
            frame_size=(int(r[0]), int(r[1])), resized_size=(int(r[2]), int(r[3])), input_size=(int(r[4]), int(r[5]))
        )
        for r in np.asarray(array).reshape(-1, 6)
    ]


def model_config(args: Mapping[str, str]) -> dict[str, Any]:
    """The model's config from the `args` Triton passes to `TritonPythonModel.initialize`."""
    config: dict[str, Any] = json.loads(args["model_config"])
    return config


def input_array(pb_utils: ModuleType, request: Any, name: str) -> np.ndarray:
    """A request's input as a numpy array, read through DLPack.

    Through DLPack, not `Tensor.as_numpy()`/`Tensor(name, array)`: stubs built against numpy 1 read numpy 2's
    array descriptors wrongly (measured: every output arrived empty).
    """
    return np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name))


def output_tensor(pb_utils: ModuleType, name: str, array: np.ndarray) -> Any:
    """A numpy array as an output tensor, handed over through DLPack (see `input_array`)."""
    return pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array))


def error_response(pb_utils: ModuleType, exc: Exception) -> Any:
    """An inference response carrying `exc`, a fault of the request's (an empty frame, a shape the model refuses),
    as its error: INVALID_ARGUMENT, the one-line message alone (the request fails, the model stays up). The code
    argument exists since Triton 23.09 (python_backend README, "Error Handling")."""
    error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
