"""`open_backend`: ONNX Runtime against a plain session, provider choice, corrupt files, TensorRT's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtime.backends import Backend, open_backend
from runtime.backends.onnxruntime import OnnxRuntimeBackend, choose_providers, provider_options
from runtime.backends.tensorrt import check_compatible
from runtime.errors import UserError
from tests.runtime.helpers import export_tiny, synthetic_frames, tiny_metadata


def _reference(model: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": images})[0]


def test_onnxruntime_backend_matches_a_plain_session(tiny_onnx: Path) -> None:
    images = np.random.default_rng(0).standard_normal((2, 3, 40, 56)).astype(np.float32)
    with open_backend(tiny_onnx, device="cpu", threads=1) as backend:
        assert isinstance(backend, Backend)
        assert backend.name == "onnxruntime[CPUExecutionProvider]"
        logits = backend.infer(images)
    assert logits.dtype == np.float32 and logits.shape == (2, 4, 40, 56)
    np.testing.assert_allclose(logits, _reference(tiny_onnx, images), rtol=1e-5, atol=1e-5)


def test_io_binding_gives_the_same_logits(tiny_onnx: Path) -> None:
    images = np.random.default_rng(1).standard_normal((1, 3, 24, 32)).astype(np.float32)
    bound = OnnxRuntimeBackend(tiny_onnx, device="cpu", io_binding=True)
    plain = OnnxRuntimeBackend(tiny_onnx, device="cpu", io_binding=False)
    np.testing.assert_array_equal(bound.infer(images), plain.infer(images))


def test_a_fixed_size_model_gets_padded_input_and_cropped_logits(tiny_onnx: Path, tmp_path: Path) -> None:
    from runtime.segmentation import segment

    fixed = export_tiny(tmp_path / "fixed.onnx", tiny_metadata(), fixed_size=(48, 64))
    frame = synthetic_frames(1, (30, 100))[0]  # letterboxed to 19x64, padded to 24x64 < the fixed 48x64
    with open_backend(fixed, device="cpu") as static, open_backend(tiny_onnx, device="cpu") as dynamic:
        assert static.fixed_size == (48, 64)  # type: ignore[attr-defined]
        mask, _ = segment(frame, static)
        np.testing.assert_array_equal(mask, segment(frame, dynamic)[0])
        with pytest.raises(UserError, match="exceeds the model's fixed input size 48x64"):
            static.infer(np.zeros((1, 3, 64, 64), np.float32))


def test_provider_preference() -> None:
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", list(reversed(everything))) == everything
    assert choose_providers("auto", ["CPUExecutionProvider", "CUDAExecutionProvider"]) == everything[1:]
    assert choose_providers("cpu", everything) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(UserError, match="CUDA is not available"):
        choose_providers("cuda", ["CPUExecutionProvider"])


def test_tensorrt_provider_caches_its_engines_beside_the_model(tmp_path: Path) -> None:
    options = provider_options(["TensorrtExecutionProvider", "CPUExecutionProvider"], tmp_path / "m.onnx")
    assert options[1] == {}
    assert options[0]["trt_engine_cache_enable"] == "True"
    assert Path(options[0]["trt_engine_cache_path"]).parent.parent == tmp_path


def test_cuda_and_unknown_providers(tiny_onnx: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        with open_backend(tiny_onnx, device="cuda") as backend:
            assert backend.name != "onnxruntime[CPUExecutionProvider]"
    else:
        with pytest.raises(UserError, match="CUDA is not available"):
            open_backend(tiny_onnx, device="cuda")
    with pytest.raises(UserError, match="NoSuchExecutionProvider is not available"):
        open_backend(tiny_onnx, providers=["NoSuchExecutionProvider"])


def test_bad_model_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    with pytest.raises(UserError, match="cannot load ONNX model") as info:
        open_backend(corrupt)
    assert info.value.where == str(corrupt)
    with pytest.raises(UserError, match="model not found"):
        open_backend(tmp_path / "missing.onnx")
    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match="unknown model file type"):
        open_backend(other)


def _engine(tmp_path: Path, **extra: object) -> Path:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not a real plan")
    (tmp_path / "model.engine.json").write_text(json.dumps({**tiny_metadata(), **extra}))
    return engine


def test_engine_without_tensorrt_is_one_clear_error(tmp_path: Path) -> None:
    engine = _engine(tmp_path, tensorrt_version="10.13.0.35", gpu_name="NVIDIA A2", compute_capability="8.6")
    with pytest.raises(UserError, match="^TensorRT is not available"):
        open_backend(engine)
    with pytest.raises(UserError, match="GPU only"):
        open_backend(engine, device="cpu")


def test_engine_without_sidecar_is_refused_before_tensorrt(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserError, match="sidecar not found"):
        open_backend(engine)


def test_sidecar_naming_another_tensorrt_or_gpu_is_refused() -> None:
    sidecar = {"tensorrt_version": "10.13.0.35", "gpu_name": "NVIDIA A2", "compute_capability": [8, 6]}
    check_compatible(sidecar, "10.13.0.35", "NVIDIA A2", "8.6")
    with pytest.raises(UserError, match=r"TensorRT 10\.13\.0\.35, this is TensorRT 10\.8\.0"):
        check_compatible(sidecar, "10.8.0", "NVIDIA A2", "8.6")
    with pytest.raises(UserError, match="built for NVIDIA A2 .*this GPU is NVIDIA T4"):
        check_compatible(sidecar, "10.13.0.35", "NVIDIA T4", "7.5")
    with pytest.raises(UserError, match=r"compute 8\.6\).*compute 8\.9"):
        check_compatible({"compute_capability": "8.6"}, "10.13.0.35", "NVIDIA A2", "8.9")
    unknown = {"tensorrt_version": "10.13.0.35", "gpu_name": "unknown (ImportError)", "compute_capability": "unknown"}
    check_compatible(unknown, "10.13.0.35", "NVIDIA T4", "7.5")  # the builder could not query its GPU


def test_engine_portability_follows_the_compatibility_it_was_built_with() -> None:
    base = {
        "tensorrt_version": "10.8.0.43",
        "gpu_name": "NVIDIA A10",
        "compute_capability": "8.6",
        "onnx": "models/cfnet.onnx",
    }
    with pytest.raises(UserError, match="cfnet build-engine models/cfnet.onnx --out m.engine") as info:
        check_compatible(base, "10.13.0.35", "NVIDIA A10", "8.6", "m.engine")
    assert "--compat version" in info.value.what  # the message names the build that would have covered it
    with pytest.raises(UserError, match="--compat hardware"):
        check_compatible(base, "10.8.0.43", "NVIDIA L4", "8.9", "m.engine")
    version = {**base, "compat": "version"}
    check_compatible(version, "10.13.0.35", "NVIDIA A10", "8.6")  # a later TensorRT runs it
    check_compatible(version, "11.4.0", "NVIDIA A10", "8.6")
    with pytest.raises(UserError, match=r"TensorRT 10\.8\.0\.43, which runs on that version or later.*10\.3\.0"):
        check_compatible(version, "10.3.0", "NVIDIA A10", "8.6")
    with pytest.raises(UserError, match="this GPU is NVIDIA L4"):
        check_compatible(version, "10.8.0.43", "NVIDIA L4", "8.9")  # version compatibility is not hardware's
    hardware = {**base, "compat": "hardware"}
    check_compatible(hardware, "10.8.0.43", "NVIDIA H100", "9.0")  # any Ampere-or-newer GPU
    with pytest.raises(UserError, match=r"Ampere and newer GPUs \(compute >= 8\.0\), this GPU is Tesla T4"):
        check_compatible(hardware, "10.8.0.43", "Tesla T4", "7.5")
    with pytest.raises(UserError, match="this is TensorRT 10.13"):
        check_compatible(hardware, "10.13.0.35", "NVIDIA H100", "9.0")
