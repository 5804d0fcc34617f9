"""Triton model `{name}_preprocess`: BGR uint8 frames (`N x H x W x 3`) -> `images` and `info` (runtime.preprocess).

For a network of fixed H and W (a static ONNX; the config's `images` output says so) the batch is zero-padded to
them, and each frame's `info` names that size as the input size, so the postprocess crops the padding away.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from runtime.backends.base import pad_batch
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
        config = model_config(args)
        self.metadata = config_metadata(config)
        dims = [int(d) for d in next(o["dims"] for o in config["output"] if o["name"] == "images")]
        self.fixed_size = (dims[-2], dims[-1]) if min(dims[-2:]) > 0 else None

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                frames = input_array(self.pb, request, "frames")
                batch, infos = preprocess(list(frames), self.metadata)
                if self.fixed_size is not None:
                    batch = pad_batch(batch, self.fixed_size)
                    infos = [replace(i, input_size=self.fixed_size) for i in infos]
                outputs = [output_tensor(self.pb, "images", batch), output_tensor(self.pb, INFO, infos_to_array(infos))]
                responses.append(self.pb.InferenceResponse(output_tensors=outputs))
            except UserError as exc:
                responses.append(error_response(self.pb, exc))
        return responses
