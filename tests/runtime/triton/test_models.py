"""The Python-backend models' own decisions, on the CPU (no Triton stub): where the ONNX Runtime step runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

import runtime.backends.availability
from runtime.backends.onnxruntime import OnnxRuntimeBackend
from runtime.errors import UserError
from runtime.triton.models.onnxruntime_model import placement

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_each_gpu_instance_runs_on_the_gpu_triton_gave_it(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22 item 7: `model_instance_device_id` (python_backend src/python_be.cc passes it in `args`) reached
    no provider, so every instance of a multi-GPU instance_group ran on GPU 0. A GPU build is simulated: the
    session records the provider options it is asked for, then runs on the CPU (so `--device cuda` is refused
    after it, which is not what is tested here)."""
    asked: list[tuple[list[str], list[dict[str, str]]]] = []
    real = ort.InferenceSession

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None, provider_options: Any = None,
                     **kwargs: Any) -> None:
            asked.append((list(providers), list(provider_options)))
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"], **kwargs)

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(ort, "InferenceSession", Recording)
    monkeypatch.setattr(runtime.backends.availability, "tensorrt_unavailable", lambda: None)
    args = {"model_instance_kind": "GPU", "model_instance_device_id": "2", "model_instance_name": "cfnet_model_0_2"}
    assert placement(args) == {"device": "cuda", "device_id": 2}
    with pytest.raises(UserError, match="--device cuda, but"):
        OnnxRuntimeBackend(tiny_onnx, **placement(args))
    [(providers, options)] = asked
    assert providers == GPU_BUILD
    assert [o.get("device_id") for o in options] == ["2", "2", None]


def test_a_cpu_instance_runs_on_the_cpu() -> None:
    assert placement({"model_instance_kind": "CPU", "model_instance_device_id": "0"}) == {"device": "cpu"}
