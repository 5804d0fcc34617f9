"""Triton model `{name}_postprocess`: the model step's `logits` (or its in-graph `mask`) and `info` -> uint8 `mask`
at each frame's size (runtime.postprocess)."""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.errors import UserError
from runtime.postprocess import postprocess
from runtime.triton.models import (
    INFO,
    error_response,
    infos_from_array,
    input_array,
    model_config,
    output_tensor,
    triton_utils,
)


class TritonPythonModel:
    """Runs `runtime.postprocess.postprocess` on each request's output (the frames of a request share a size)."""

    def initialize(self, args: dict[str, str]) -> None:
        self.pb = triton_utils()
        self.scores = next(i["name"] for i in model_config(args)["input"] if i["name"] != INFO)  # logits or mask

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                scores = input_array(self.pb, request, self.scores)
                infos = infos_from_array(input_array(self.pb, request, INFO))
                masks = np.stack(postprocess(scores, infos))
                responses.append(self.pb.InferenceResponse(output_tensors=[output_tensor(self.pb, "mask", masks)]))
            except (UserError, ValueError) as exc:
                responses.append(error_response(self.pb, exc))
        return responses
