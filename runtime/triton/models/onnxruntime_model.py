"""Triton model `{name}_model` on the Python backend: `images` -> `logits` (or the in-graph `mask`) through the
runtime's ONNX Runtime backend.

For Triton builds with only the Python backend (CPU servers, the server in the `nvidia-pytriton` wheel).
Requests the dynamic batcher groups into one `execute` run as one batch per input shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.onnxruntime import OnnxRuntimeBackend
from runtime.errors import UserError
from runtime.triton.models import error_response, input_array, output_tensor, triton_utils


def placement(args: Mapping[str, str]) -> dict[str, Any]:
    """Where Triton put this instance, from the `args` of `initialize` (python_backend README, "initialize"):
    `device` and, for a GPU instance, the `device_id` of its GPU (`model_instance_device_id`), which the GPU
    providers must be given: else every instance of a multi-GPU `instance_group` runs on GPU 0."""
    if args.get("model_instance_kind") != "GPU":
        return {"device": "cpu"}
    return {"device": "cuda", "device_id": int(args.get("model_instance_device_id", "0"))}


class TritonPythonModel:
    """ONNX Runtime on `model.onnx` beside this file's shim, on the GPU Triton gives the instance, if any."""

    def initialize(self, args: dict[str, str]) -> None:
        self.pb = triton_utils()
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.backend = OnnxRuntimeBackend(path, **placement(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        images = [input_array(self.pb, r, "images") for r in requests]
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, batch in enumerate(images):
            groups.setdefault(batch.shape[1:], []).append(index)
        for members in groups.values():
            try:
                outputs = self.backend.infer(np.concatenate([images[i] for i in members]))
            except UserError as exc:
                for i in members:
                    responses[i] = error_response(self.pb, exc)
                continue
            splits = np.cumsum([len(images[i]) for i in members])[:-1]
            name = self.backend.output
            for i, part in zip(members, np.split(outputs, splits), strict=True):
                responses[i] = self.pb.InferenceResponse(output_tensors=[output_tensor(self.pb, name, part)])
        return responses

    def finalize(self) -> None:
        self.backend.close()
