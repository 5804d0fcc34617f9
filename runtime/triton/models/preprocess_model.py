"""Triton model `{name}_preprocess`: BGR uint8 frames (`N x H x W x 3`) -> `images` and `info` (runtime.preprocess)."""

from __future__ import annotations

from typing import Any

from runtime.errors import UserError
from runtime.preprocess import preprocess
from runtime.triton.config import config_metadata
from runtime.triton.models import (
    INFO,
    error_response,
    infos_to_array,
    input_array,
    model_config,
    output_tensor,
    triton_utils,
)


class TritonPythonModel:
    """Runs `runtime.preprocess.preprocess` on each request's frames."""

    def initialize(self, args: dict[str, str]) -> None:
        self.pb = triton_utils()
        self.metadata = config_metadata(model_config(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                frames = input_array(self.pb, request, "frames")
                batch, infos = preprocess(list(frames), self.metadata)
                outputs = [output_tensor(self.pb, "images", batch), output_tensor(self.pb, INFO, infos_to_array(infos))]
                responses.append(self.pb.InferenceResponse(output_tensors=outputs))
            except UserError as exc:
                responses.append(error_response(self.pb, exc))
        return responses
