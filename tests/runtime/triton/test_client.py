"""The Triton client's reading of a server's models, on the CPU: a fake gRPC client serves the configs the
repository writer makes (as Triton hands them out: protobuf JSON), so repositories the wheel's server cannot load
(ONNX Runtime and TensorRT steps) are read too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc
from google.protobuf import text_format
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import model_config_pb2

from export.mask import write_mask_variant
from export.triton import export_triton
from runtime.backends.triton import TritonBackend
from runtime.errors import UserError
from runtime.stream.sizing import check_batch
from tests.runtime.helpers import export_tiny, tiny_metadata


def serving(monkeypatch: pytest.MonkeyPatch, repository: Path) -> None:
    """Point the client at a fake server holding every model of `repository`."""
    configs = {}
    for path in repository.glob("*/config.pbtxt"):
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        configs[config.name] = MessageToDict(config, preserving_proto_field_name=True)

    class Client:
        def __init__(self, address: str) -> None:
            self.address = address

        def is_server_live(self, client_timeout: float) -> bool:
            return True

        def is_model_ready(self, model: str, client_timeout: float) -> bool:
            return model in configs

        def get_model_config(self, model: str, as_json: bool, client_timeout: float) -> dict[str, Any]:
            return {"config": configs[model]}

        def close(self) -> None:
            pass

    monkeypatch.setattr(tritonclient.grpc, "InferenceServerClient", Client)


@pytest.fixture
def repository(tiny_onnx: Path, tmp_path: Path) -> Callable[..., Path]:
    def write(model: Path | None = None, **kwargs: Any) -> Path:
        export_triton(model or tiny_onnx, tmp_path / "repo", **kwargs)
        return tmp_path / "repo"

    return write


def test_a_model_with_both_outputs_is_read_for_its_mask(
    repository: Callable[..., Path], tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 2: the step lists `logits` and `mask`; the client asks for the mask, as the local backends."""
    serving(monkeypatch, repository(write_mask_variant(tiny_onnx, tmp_path / "both.onnx", output="both")))
    with TritonBackend("grpc://127.0.0.1:1/cfnet") as backend:
        assert backend.outputs == ("logits", "mask") and backend.output == "mask"


def test_the_network_steps_name_reaches_its_ensemble(
    repository: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25 item 7: `grpc://.../cfnet_model` looked for `cfnet_model_model`."""
    serving(monkeypatch, repository())
    with TritonBackend("grpc://127.0.0.1:1/cfnet_model") as backend:
        assert (backend.ensemble, backend.model) == ("cfnet", "cfnet_model")
    with pytest.raises(UserError, match="model 'other_model' is not ready"):
        TritonBackend("grpc://127.0.0.1:1/other_model")


def test_a_batch_over_the_repositorys_limit_names_both_fixes(
    repository: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25 item 7: `stream --batch 16` on a repository of max_batch_size 8."""
    serving(monkeypatch, repository())
    with TritonBackend("grpc://127.0.0.1:1/cfnet") as backend:
        assert backend.max_batch == 8
        check_batch(backend, 8)
        with pytest.raises(UserError) as info:
            check_batch(backend, 16)
    assert info.value.what == (
        "the Triton model takes batches of at most 8 (its max_batch_size), asked for 16; use --batch 8 or write the "
        "repository again with `cfnet export triton --max-batch 16`"
    )


def test_an_unbatched_static_model_takes_its_fixed_batch_and_size(
    repository: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    static = export_tiny(tmp_path / "static.onnx", tiny_metadata(), fixed_size=(48, 64))
    serving(monkeypatch, repository(static))
    with TritonBackend("grpc://127.0.0.1:1/cfnet") as backend:
        assert backend.max_batch == 1 and backend.fixed_size == (48, 64)
