"""A Triton Inference Server as a runtime backend: `--model grpc://HOST:PORT/NAME` (a `cfnet export triton` repo).

`infer(images)` sends the preprocessed batch to `{NAME}_model`, so `segment` and `stream` run unchanged;
`segment_frames(frames)` sends raw frames to the ensemble `{NAME}` and gets uint8 masks back (1 byte a pixel
on the wire instead of C float logits). The metadata is read from the server (the config's `parameters`).
`tritonclient` is imported on first use (extra `cfnet[serve]`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from runtime.artifact import ModelMetadata, Overrides
from runtime.backends.base import Backend, as_output, choose_output, crop_output, pad_batch
from runtime.errors import UserError
from runtime.triton.config import STEP_SUFFIX, config_metadata, model_step

SCHEME = "grpc://"


def parse_url(url: str) -> tuple[str, str]:
    """`grpc://HOST:PORT/NAME` -> (`HOST:PORT`, `NAME`)."""
    parsed = urlparse(url)
    name = parsed.path.strip("/")
    try:
        port = parsed.port  # a port out of 0..65535 or not a number raises
    except ValueError:
        port = None
    if parsed.scheme != "grpc" or not parsed.hostname or not port or not name or "/" in name:
        raise UserError(f"malformed Triton URL '{url}'", "expected grpc://HOST:PORT/NAME, PORT 1..65535")
    return f"{parsed.hostname}:{port}", name


class TritonBackend(Backend):
    """The models `{name}` (ensemble) and `{name}_model` of a Triton server, over gRPC.

    `timeout`: seconds for connecting and for each request; a server that is down, a missing model, a refused
    shape or a lost server is a `UserError` naming the URL.
    """

    def __init__(self, url: str, timeout: float = 30.0, overrides: Overrides | None = None) -> None:
        try:
            import tritonclient.grpc as grpcclient
            from tritonclient.utils import InferenceServerException
        except ImportError:
            raise UserError("the Triton client is not installed", "pip install 'cfnet[serve]'") from None
        self.url, self.timeout = url, timeout
        self.address, self.ensemble = parse_url(url)
        self.model = model_step(self.ensemble)
        self._grpc, self._error = grpcclient, InferenceServerException
        self.client = grpcclient.InferenceServerClient(self.address)
        try:
            self.metadata: ModelMetadata = self._connect(overrides)
        except BaseException:
            self.client.close()
            raise
        self.name = f"triton[{self.address}/{self.ensemble}]"
        self.path = url
        self.device = "remote"  # the server decides where the model runs
        self.concurrent = False  # one gRPC channel, one request in flight
        self.bytes_sent = 0
        self.bytes_received = 0

    def _connect(self, overrides: Overrides | None) -> ModelMetadata:
        """Check the server and both models, and read the metadata from `{name}_model`'s config."""
        try:
            live = self.client.is_server_live(client_timeout=self.timeout)
        except self._error:
            live = False
        if not live:
            raise UserError("Triton server not reachable", f"{self.url}: is `cfnet serve` running?")
        named = self.ensemble.removesuffix(STEP_SUFFIX)
        if named != self.ensemble and not self._ready(self.model) and self._ready(named):
            self.ensemble, self.model = named, self.ensemble  # the network step's name given: its ensemble's
        for model in (self.ensemble, self.model):
            if not self._ready(model):
                raise UserError(f"model '{model}' is not ready on the Triton server", self.url)
        config = self._call(self.client.get_model_config, self.model, as_json=True, client_timeout=self.timeout)
        self.outputs = tuple(o["name"] for o in config["config"]["output"])
        self.output = choose_output(self.outputs)  # the in-graph mask when there is one, else logits
        batch, dims = int(config["config"].get("max_batch_size", 0)), config["config"]["input"][0]["dims"]
        self.max_batch = batch or (int(dims[0]) if int(dims[0]) > 0 else None)  # an unbatched model: its fixed N
        self.fixed_size = (int(dims[-2]), int(dims[-1])) if min(int(d) for d in dims[-2:]) > 0 else None
        return config_metadata(config["config"], overrides)

    def _ready(self, model: str) -> bool:
        return bool(self._call(self.client.is_model_ready, model, client_timeout=self.timeout))

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except self._error as exc:
            raise UserError(f"Triton: {_reason(exc)}", self.url) from None

    def _infer(self, model: str, name: str, array: np.ndarray, dtype: str, output: str) -> np.ndarray:
        tensor = self._grpc.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        result = self._call(
            self.client.infer,
            model,
            [tensor],
            outputs=[self._grpc.InferRequestedOutput(output)],
            client_timeout=self.timeout,
        )
        out = np.asarray(result.as_numpy(output))
        self.bytes_sent += array.nbytes
        self.bytes_received += out.nbytes
        return out

    def infer(self, images: np.ndarray) -> np.ndarray:
        """`N x 3 x H x W` float32 -> `N x C x H x W` float32 logits (or a mask model's `N x H x W` uint8 mask),
        through `{name}_model`."""
        size = (images.shape[2], images.shape[3])
        images = np.ascontiguousarray(pad_batch(images, self.fixed_size or size), dtype=np.float32)
        output = as_output(self._infer(self.model, "images", images, "FP32", self.output))
        return crop_output(output, size, (images.shape[2], images.shape[3]))  # a fixed-size model's padding off

    def segment_frames(self, frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """BGR uint8 frames of one size -> uint8 masks at that size, through the ensemble (server-side pre/post)."""
        if not isinstance(frames, np.ndarray):
            if len({np.shape(f) for f in frames}) > 1:
                raise UserError("the frames of one request must share a size; send them separately", self.url)
            frames = np.stack(list(frames))
        batch = np.ascontiguousarray(frames)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
            raise UserError(f"frames must be N x H x W x 3 uint8 BGR, got {batch.shape} {batch.dtype}", self.url)
        return list(self._infer(self.ensemble, "frames", batch, "UINT8", "mask"))

    def close(self) -> None:
        """Close the gRPC channel."""
        client = self.__dict__.pop("client", None)
        if client is not None:
            client.close()


def _reason(exc: Exception) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return " ".join(str(text).split())[:300]
