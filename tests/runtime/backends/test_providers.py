"""ONNX Runtime on a GPU build, simulated on the CPU: a provider list that claims TensorRT and CUDA, a session
that falls back to the CPU, ONNX Runtime's fallback notice on stdout, the TensorRT EP's engine cache key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

import runtime.backends.availability
from runtime.backends import open_backend
from runtime.backends.onnxruntime import check_providers, choose_providers, provider_options
from runtime.errors import UserError
from tests.runtime.helpers import export_tiny, tiny_metadata

GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture
def gpu_build(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], list[dict[str, str]]]]:
    """ONNX Runtime claims the TensorRT and CUDA EPs (as onnxruntime-gpu does without a working TensorRT);
    the session, really created on this CPU build, ends on the CPU. Returns what each session was asked for."""
    asked: list[tuple[list[str], list[dict[str, str]]]] = []
    real = ort.InferenceSession

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None, provider_options: Any = None,
                     **kwargs: Any) -> None:
            asked.append((list(providers), list(provider_options)))
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"], **kwargs)

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(ort, "InferenceSession", Recording)
    return asked


def test_the_tensorrt_ep_is_offered_only_when_tensorrt_loads() -> None:
    assert choose_providers("auto", GPU_BUILD, tensorrt_loads=False) == GPU_BUILD[1:]
    assert choose_providers("cuda", GPU_BUILD, tensorrt_loads=False) == GPU_BUILD[1:]
    assert choose_providers("auto", GPU_BUILD, tensorrt_loads=True) == GPU_BUILD
    with pytest.raises(UserError, match="CUDA is not available"):
        choose_providers("cuda", ["TensorrtExecutionProvider", "CPUExecutionProvider"], tensorrt_loads=False)


def test_a_listed_tensorrt_ep_without_tensorrt_is_not_asked_for(
    gpu_build: list, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # here `import tensorrt` finds only the stubs: no working tensorrt.Builder
    assert runtime.backends.availability.tensorrt_unavailable() is not None
    with open_backend(tiny_onnx, device="auto") as backend:
        assert backend.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
    assert gpu_build[0][0] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    err = capsys.readouterr().err
    assert "could not start CUDAExecutionProvider; running on CPUExecutionProvider" in err


def test_device_cuda_that_ends_on_the_cpu_is_an_error(gpu_build: list, tiny_onnx: Path) -> None:
    with pytest.raises(UserError, match="--device cuda, but ONNX Runtime could not start CUDAExecution") as info:
        open_backend(tiny_onnx, device="cuda")
    assert info.value.where == str(tiny_onnx)


def test_check_providers_decides_from_the_session() -> None:
    assert check_providers("cuda", GPU_BUILD, ["CUDAExecutionProvider", "CPUExecutionProvider"], "m") == (
        "warning: ONNX Runtime could not start TensorrtExecutionProvider; running on CUDAExecutionProvider, "
        "CPUExecutionProvider"
    )
    assert check_providers("cuda", GPU_BUILD, GPU_BUILD, "m") is None
    assert check_providers("cpu", ["CPUExecutionProvider"], ["CPUExecutionProvider"], "m") is None
    with pytest.raises(UserError, match="runs on CPUExecutionProvider"):
        check_providers("cuda", GPU_BUILD[1:], ["CPUExecutionProvider"], "m")


def test_onnxruntime_fallback_notice_never_reaches_stdout(
    monkeypatch: pytest.MonkeyPatch, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The TensorRT EP fails at session creation (libnvinfer missing): ONNX Runtime's own Python fallback
    prints `EP Error ... Falling back` and retries on the CPU. stdout must stay the command's (`--json`)."""
    real = ort.InferenceSession._create_inference_session
    calls = []

    def failing_first(self: Any, providers: Any, provider_options: Any, *args: Any) -> Any:
        calls.append(list(providers))
        real(self, ["CPUExecutionProvider"], None, *args)  # sets ORT's fallback list, as the real call does
        if len(calls) == 1:
            raise RuntimeError("TensorRT EP could not be created: libnvinfer.so.10: cannot open shared object file")

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(runtime.backends.availability, "tensorrt_unavailable", lambda: None)
    monkeypatch.setattr(ort.InferenceSession, "_create_inference_session", failing_first)
    with open_backend(tiny_onnx, device="auto") as backend:
        assert backend.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
    captured = capsys.readouterr()
    assert calls[0] == GPU_BUILD and calls[1] == ["CPUExecutionProvider"]  # ORT's own fallback ran
    assert captured.out == ""
    assert "EP Error" in captured.err and "running on CPUExecutionProvider" in captured.err
    calls.clear()
    with pytest.raises(UserError, match="--device cuda, but"):
        open_backend(tiny_onnx, device="cuda")
    assert capsys.readouterr().out == ""


def test_fp16_is_asked_of_the_tensorrt_ep(gpu_build: list, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.backends.availability, "tensorrt_unavailable", lambda: None)  # TensorRT loads
    open_backend(tiny_onnx, device="auto", fp16=True).close()
    open_backend(tiny_onnx, device="auto").close()
    (fp16_providers, fp16_options), (_, fp32_options) = gpu_build
    assert fp16_providers == GPU_BUILD
    assert fp16_options[0]["trt_fp16_enable"] == "True" and fp32_options[0]["trt_fp16_enable"] == "False"
    assert fp16_options[1] == {"device_id": "0"}  # CUDA EP: GPU 0 unless told
    assert fp16_options[0]["trt_engine_cache_path"] != fp32_options[0]["trt_engine_cache_path"]


def test_the_tensorrt_ep_engine_cache_is_keyed_by_the_weights(tmp_path: Path) -> None:
    """A re-export with new weights to the same path must not be served the old engine."""
    import onnx
    from onnx import numpy_helper

    def engine_cache(path: Path) -> str:
        return provider_options(["TensorrtExecutionProvider", "CPUExecutionProvider"], path)[0]["trt_engine_cache_path"]

    model = export_tiny(tmp_path / "model.onnx", tiny_metadata())
    first = engine_cache(model)
    assert Path(first).parent == tmp_path / ".model.trt-cache"
    assert engine_cache(model) == first
    proto = onnx.load(str(model))  # same graph, same name, other weights
    weight = proto.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 1, weight.name))
    onnx.save(proto, str(model))
    assert engine_cache(model) != first
    timing = provider_options(["TensorrtExecutionProvider"], model)[0]["trt_timing_cache_path"]
    assert Path(timing) == tmp_path / ".model.trt-cache"  # the timing cache holds no weights: shared


def test_the_engine_cache_folder_exists_before_the_session_is_created(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORT's TensorRT EP creates only the last level of `trt_engine_cache_path` (`fs::create_directory`):
    `.NAME.trt-cache/<key>` must exist, parents included, when the session is created."""
    model = tmp_path / "fresh" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(tiny_onnx.read_bytes())
    seen: list[dict[str, bool]] = []
    real = ort.InferenceSession

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None, provider_options: Any = None,
                     **kwargs: Any) -> None:
            trt = provider_options[0]
            seen.append({key: Path(trt[key]).is_dir() for key in ("trt_engine_cache_path", "trt_timing_cache_path")})
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"], **kwargs)

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(runtime.backends.availability, "tensorrt_unavailable", lambda: None)  # TensorRT loads
    monkeypatch.setattr(ort, "InferenceSession", Recording)
    open_backend(model, device="auto").close()
    assert seen == [{"trt_engine_cache_path": True, "trt_timing_cache_path": True}]


def test_an_unwritable_model_folder_is_named(tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / ".model.trt-cache"
    blocker.write_text("a file where the cache folder goes")
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(GPU_BUILD))
    monkeypatch.setattr(runtime.backends.availability, "tensorrt_unavailable", lambda: None)
    with pytest.raises(UserError, match="cannot create the TensorRT engine cache"):
        open_backend(model, device="auto")
