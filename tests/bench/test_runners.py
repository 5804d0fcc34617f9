"""The bench's runners and artifact cache, under GPU conditions simulated on the CPU: a model whose `.to()`
changes it, an engine profile against the images the accuracy step feeds, int8 files per calibration set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.runners import ArtifactCache, Skipped, TorchRunner, engine_shapes, int8_note, int8_target, open_runner


class Moving(torch.nn.Module):
    """A model whose `.to()` changes it in place, as a move to the GPU does for an exporter tracing on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.moves: list[tuple[Any, ...]] = []
        self.config = {"model": "moving"}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images * self.weight

    def to(self, *args: Any, **kwargs: Any) -> Moving:
        self.moves.append(args)
        with torch.no_grad():
            self.weight.mul_(2)
        return self


def test_the_torch_baseline_leaves_the_exported_model_as_it_was(tmp_path: Path) -> None:
    model = Moving().train()
    exported: list[float] = []

    def exporter(model: Any, out: Path, **_: Any) -> Path:
        exported.append(model.weight.item())
        out.write_bytes(b"onnx")
        return out

    runner = open_runner("torch", model, "moving", ArtifactCache(tmp_path, (4, 4), exporter), "cpu", 1)
    assert isinstance(runner, TorchRunner)
    images = np.ones((1, 3, 4, 4), np.float32)
    np.testing.assert_array_equal(runner.infer(images), 2 * images)  # the runner's own copy was moved
    assert model.moves == [] and model.weight.item() == 1.0 and model.training
    ArtifactCache(tmp_path, (4, 4), exporter).onnx(model, "moving", "fp32")
    assert exported == [1.0]


def test_the_engine_profile_covers_the_split_images() -> None:
    # timed at 64x64; the accuracy step feeds 100x150 and 50x60 images padded to the divisor 32
    low, opt, high = engine_shapes((64, 64), [(100, 150), (50, 60)], 32)
    assert opt == (1, 3, 64, 64) and low == (1, 3, 64, 64) and high == (1, 3, 128, 160)
    assert engine_shapes((64, 128), [], 32) == ((1, 3, 64, 128),) * 3
    assert engine_shapes((128, 256), [(32, 300)], 32)[0] == (1, 3, 32, 256)


def test_the_engine_is_built_for_the_profile_and_a_failed_build_skips_only_tensorrt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import export.tensorrt
    from cfnet.errors import UserError

    built: list[dict[str, Any]] = []

    def build_engine(onnx_path: Path, out: Path, **shapes: Any) -> Path:
        built.append(shapes)
        if len(built) > 1:
            raise UserError("TensorRT is not available", "no GPU")
        out.write_bytes(b"plan")
        return out

    def exporter(model: Any, out: Path, **_: Any) -> Path:
        out.write_bytes(b"onnx")
        return out

    monkeypatch.setattr(export.tensorrt, "build_engine", build_engine)
    model = Moving()
    model.size_divisor = 32  # type: ignore[assignment]
    cache = ArtifactCache(tmp_path, (64, 64), exporter, feeds=[(100, 150)])
    engine = cache.engine(model, "m")
    assert built[0]["max_shape"] == (1, 3, 128, 160) and built[0]["opt_shape"] == (1, 3, 64, 64)
    assert engine.name == "m-64x64-fp32-max128x160.engine"
    assert cache.engine(model, "m") == engine and len(built) == 1  # cached
    wider = ArtifactCache(tmp_path, (64, 64), exporter, feeds=[(300, 300)])
    with pytest.raises(Skipped, match="engine build failed: TensorRT is not available"):
        wider.engine(model, "m")  # a larger profile is another engine, not the cached smaller one


def test_the_int8_cache_is_keyed_by_the_calibration_images(tmp_path: Path) -> None:
    """A later run calibrated on real images must not reuse the int8 model calibrated on noise."""
    calls: list[list[np.ndarray]] = []

    def exporter(model: Any, out: Path, *, calib_images: Any, **_: Any) -> Path:
        calls.append(list(calib_images or []))
        out.write_bytes(b"int8")
        return out

    noise = [np.zeros((1, 3, 4, 4), np.float32)]
    real = [np.ones((1, 3, 4, 4), np.float32)]
    first = ArtifactCache(tmp_path, (4, 4), exporter, lambda: noise).onnx(Moving(), "m", "int8")
    second = ArtifactCache(tmp_path, (4, 4), exporter, lambda: real).onnx(Moving(), "m", "int8")
    again = ArtifactCache(tmp_path, (4, 4), exporter, lambda: [b.copy() for b in noise]).onnx(Moving(), "m", "int8")
    assert second != first and again == first
    assert len(calls) == 2 and calls[1][0].max() == 1.0
    assert ArtifactCache(tmp_path, (4, 4), exporter).onnx(Moving(), "m", "fp32").name == "m-4x4-fp32.onnx"


def test_int8_rows_on_cuda_export_tensorrts_int8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On cuda the int8 rows run TensorRT's symmetric int8; the cpu target's uint8 Q/DQ would split the graph."""
    import runtime.cpu

    monkeypatch.setattr(runtime.cpu, "int8_path", lambda: "avx2")
    calls: list[dict[str, Any]] = []

    def exporter(model: Any, out: Path, **options: Any) -> Path:
        calls.append(options)
        out.write_bytes(b"int8")
        return out

    batches = [np.zeros((1, 3, 4, 4), np.float32)] * 4
    on_cpu = ArtifactCache(tmp_path, (4, 4), exporter, lambda: batches).onnx(Moving(), "m", "int8")
    on_cuda = ArtifactCache(tmp_path, (4, 4), exporter, lambda: batches, device="cuda")
    plain, auto = on_cuda.onnx(Moving(), "m", "int8"), on_cuda.onnx(Moving(), "m", "int8-auto")
    assert [c["int8_target"] for c in calls] == ["cpu", "tensorrt", "tensorrt"]
    assert "-int8-cpu-" in on_cpu.name and "-int8-tensorrt-" in plain.name and "-int8-auto-tensorrt-" in auto.name
    fp32 = ArtifactCache(tmp_path, (4, 4), exporter, device="cuda").onnx(Moving(), "m", "fp32")
    assert fp32.name == "m-4x4-fp32.onnx"
    assert int8_target("cuda") == "tensorrt" and int8_target("cpu") == "cpu"
    for path, target in (("vnni", "cpu-vnni"), ("amx", "cpu-vnni"), ("avx2", "cpu"), ("other", "cpu")):
        monkeypatch.setattr(runtime.cpu, "int8_path", lambda path=path: path)
        assert int8_target("cpu") == target, path  # the CPU target that fits the CPU it times


def test_int8_rows_say_their_target_and_the_cpus_int8_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.cpu
    from bench.run import _row
    from bench.timing import Timing

    monkeypatch.setattr(runtime.cpu, "int8_path", lambda: "avx2")
    assert int8_note("onnxruntime-int8", "cpu") == "cpu target on AVX2 without VNNI (saturating int16 pair sums)"
    monkeypatch.setattr(runtime.cpu, "int8_path", lambda: "vnni")
    assert int8_note("onnxruntime-int8", "cpu") == "cpu-vnni target on VNNI (exact sums)"
    assert int8_note("onnxruntime-int8-auto", "cuda") == "tensorrt target"
    assert int8_note("onnxruntime", "cpu") is None and int8_note("tensorrt", "cuda") is None
    info = {"model": "m", "params_m": 1.0, "gflops": 2.0, "paper_params_m": None, "paper_time_s": None,
            "paper_miou": None}
    timings = {b: Timing((t, t)) for b, t in
               (("torch", 0.04), ("torch-fp16", 0.02), ("tensorrt", 0.01), ("onnxruntime-int8", 0.01))}
    trt = _row(info, "tensorrt", timings, {}, {}, {}, {}, {}, "cuda")
    assert trt["speedup"] == pytest.approx(4.0) and trt["speedup_fp16"] == pytest.approx(2.0)  # fp16 vs fp16
    int8 = _row(info, "onnxruntime-int8", timings, {}, {}, {}, {}, {}, "cuda")
    assert int8["int8"] == "tensorrt target" and "speedup_fp16" not in int8


def test_the_torch_baseline_on_cuda_lets_cudnn_pick_its_kernels(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, (4, 4))
    before = torch.backends.cudnn.benchmark
    runner = open_runner("torch", Moving(), "moving", cache, "cuda", 1)  # Moving.to() stays on the CPU
    assert torch.backends.cudnn.benchmark is True
    runner.close()
    assert torch.backends.cudnn.benchmark is before
    open_runner("torch", Moving(), "moving", cache, "cpu", 1).close()
    assert torch.backends.cudnn.benchmark is before  # nothing to pick on the CPU
    with pytest.raises(Skipped, match="fp16 autocast needs CUDA"):
        open_runner("torch-fp16", Moving(), "moving", cache, "cpu", 1)
    fp16 = open_runner("torch-fp16", Moving(), "moving", cache, "cuda", 1)
    assert isinstance(fp16, TorchRunner) and fp16.name == "torch-fp16" and fp16.fp16
    fp16.close()
