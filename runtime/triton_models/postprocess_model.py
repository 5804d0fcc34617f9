"""Triton model `{name}_postprocess`: `logits` and `info` -> uint8 `mask` at each frame's size (runtime.postprocess)."""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.errors import UserError
from runtime.postprocess import postprocess
from runtime.triton_models import INFO, error_response, infos_from_array, input_array, output_tensor, triton_utils


class TritonPythonModel:
    """Runs `runtime.postprocess.postprocess` on each request's logits (the frames of a request share a size)."""

    def initialize(self, args: dict[str, str]) -> None:
        self.pb = triton_utils()

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                logits = input_array(self.pb, request, "logits")
                infos = infos_from_array(input_array(self.pb, request, INFO))
                masks = np.stack(postprocess(logits, infos))
                responses.append(self.pb.InferenceResponse(output_tensors=[output_tensor(self.pb, "mask", masks)]))
            except (UserError, ValueError) as exc:
                responses.append(error_response(self.pb, exc))
        return responses
