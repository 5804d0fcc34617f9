"""What `build-engine` computes on the CPU: ONNX input, profile defaults and checks, precision path, sidecar,
and the refusal without TensorRT (this machine has none: the real `tensorrt.Builder` is what fails)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from cfnet.errors import UserError
from cfnet.models import SegmentationModel
from export.engine_config import (
    BuildPlan,
    OnnxInput,
    Profile,
    default_profile,
    plan_build,
    read_onnx_input,
    resolve_profile,
    sidecar,
    write_sidecar,
)

DYNAMIC = (None, 3, None, None)


def _input(size: str | None = "512x1024", divisor: str = "32", dims: tuple[int | None, ...] = DYNAMIC) -> OnnxInput:
    meta = {"cfnet.size_divisor": divisor, "cfnet.precision": "fp32"}
    if size is not None:
        meta["cfnet.input_size"] = size
    return OnnxInput("images", dims, meta)


def test_defaults_come_from_the_metadata_size() -> None:
    profile = default_profile(_input("512x1024"))
    assert profile == Profile("images", (1, 3, 256, 512), (1, 3, 512, 1024), (1, 3, 1024, 2048))
    odd = default_profile(_input("500x700", divisor="32"))  # sides rounded up to the divisor
    assert odd.opt == (1, 3, 512, 704) and odd.min == (1, 3, 256, 352) and odd.max == (1, 3, 1024, 1408)
    static = default_profile(_input(None, dims=(2, 3, 64, 128)))
    assert static.min == static.opt == static.max == (2, 3, 64, 128)


def test_given_shapes_win_and_missing_ones_widen_around_opt() -> None:
    given = resolve_profile(_input(), (1, 3, 128, 128), (1, 3, 256, 256), (4, 3, 512, 512))
    assert (given.min, given.opt, given.max) == ((1, 3, 128, 128), (1, 3, 256, 256), (4, 3, 512, 512))
    big_opt = resolve_profile(_input(), opt_shape=(2, 3, 2048, 4096))
    assert big_opt.min == (1, 3, 256, 512) and big_opt.max == (2, 3, 2048, 4096)
    foreign = resolve_profile(_input(None), opt_shape=(1, 3, 320, 640))
    assert foreign.min == foreign.opt == foreign.max == (1, 3, 320, 640)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (((1, 3, 512, 512), (1, 3, 256, 256), None), "min shape 1x3x512x512 exceeds opt shape"),
        (((1, 3, 256, 256), (1, 3, 512, 512), (1, 3, 384, 384)), "opt shape 1x3x512x512 exceeds max shape"),
        ((None, None, (1, 3, 128, 128)), "exceeds max shape 1x3x128x128"),
        (((1, 1, 256, 256), (1, 3, 512, 512), None), "channel count 1 does not match the model's fixed 3"),
        ((None, (1, 3, 500, 512), None), "multiples of the model's size divisor 32"),
        (((1, 3, 0, 256), (1, 3, 512, 512), None), "4 positive dims"),
    ],
)
def test_bad_profiles_are_refused(shapes: tuple, message: str) -> None:
    with pytest.raises(UserError, match=message):
        resolve_profile(_input(), *shapes)


def test_fixed_dims_of_the_model_must_be_kept() -> None:
    with pytest.raises(UserError, match="channel count 4 does not match the model's fixed 3"):
        resolve_profile(_input(), (1, 4, 256, 256), (1, 4, 512, 512), (1, 4, 512, 512))
    fixed = _input(dims=(1, 3, None, None))
    with pytest.raises(UserError, match="dimension 0 2 does not match the model's fixed 1"):
        resolve_profile(fixed, opt_shape=(2, 3, 512, 1024))


def test_a_model_with_dynamic_channels_still_takes_three() -> None:
    with pytest.raises(UserError, match="takes 3 channels, not 4"):
        resolve_profile(_input(dims=(None, None, None, None)), opt_shape=(1, 4, 512, 1024))


def test_a_dynamic_model_without_metadata_needs_shapes() -> None:
    with pytest.raises(UserError, match="no cfnet.input_size"):
        resolve_profile(_input(None))


@pytest.mark.parametrize(
    ("version", "has_flag", "fp16", "precision", "expected"),
    [
        ("10.13.0", True, True, "fp32", BuildPlan(False, True, True, False, "fp16")),
        ("10.13.0", True, False, "fp32", BuildPlan(False, False, False, False, "fp32")),
        ("11.4.0", False, True, "fp32", BuildPlan(True, False, False, True, "fp16")),
        ("11.4.0", False, False, "fp32", BuildPlan(True, False, False, False, "fp32")),
        ("10.13.0", True, True, "fp16", BuildPlan(True, False, False, False, "fp16")),
        ("11.4.0", False, True, "int8", BuildPlan(True, False, False, False, "int8")),
        ("10.99", False, True, "fp32", BuildPlan(True, False, False, True, "fp16")),  # a 10.x without the flag
    ],
)
def test_precision_path_per_tensorrt_version(
    version: str, has_flag: bool, fp16: bool, precision: str, expected: BuildPlan
) -> None:
    assert plan_build(version, has_flag, fp16, precision) == expected


def test_old_or_unknown_tensorrt_is_refused() -> None:
    with pytest.raises(UserError, match="too old"):
        plan_build("8.6.1", True, True, "fp32")
    with pytest.raises(UserError, match="unrecognised"):
        plan_build("dev", True, True, "fp32")


def test_sidecar_holds_metadata_build_facts_and_profile(
    tmp_path: Path, exported: dict[str, tuple[SegmentationModel, Path]]
) -> None:
    from runtime.backends import read_metadata

    _, onnx_path = exported["segformer"]
    onnx_input = read_onnx_input(onnx_path)
    assert onnx_input.name == "images" and onnx_input.dims == DYNAMIC and onnx_input.divisor == 32
    profile = resolve_profile(onnx_input)
    assert profile.opt == (1, 3, 64, 128)
    plan = plan_build("11.4.0", False, True, onnx_input.precision)
    content = sidecar(
        onnx_input, onnx_path, profile, plan, tensorrt_version="11.4.0", gpu_name="RTX 4090", compute_capability="8.9"
    )
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    side = write_sidecar(content, engine)
    assert side.name == "model.engine.json"
    data = json.loads(side.read_text())
    props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    assert data["metadata"] == {**props, "cfnet.precision": "fp16"}
    assert data["tensorrt_version"] == "11.4.0" and data["gpu_name"] == "RTX 4090"
    assert data["compute_capability"] == "8.9"
    assert data["profile"] == {
        "input": "images",
        "min": [1, 3, 32, 64],
        "opt": [1, 3, 64, 128],
        "max": [1, 3, 128, 256],
    }
    meta = read_metadata(engine)  # the runtime reads the sidecar as the engine's metadata
    assert meta.model == "segformer" and meta.precision == "fp16" and meta.input_size == (64, 128)


def test_tensorrt_missing_is_a_user_error() -> None:
    from export.tensorrt import open_builder

    with pytest.raises(UserError, match="TensorRT is not available") as info:
        open_builder()
    assert "pip install" in str(info.value)


def test_only_float_reductions_are_pinned_to_fp32() -> None:
    from export.engine_config import keeps_fp32

    assert keeps_fp32("REDUCE", [True]) and keeps_fp32("NORMALIZATION", [True, True, True])
    assert not keeps_fp32("REDUCE", [False])  # integer shape arithmetic keeps its type
    assert not keeps_fp32("NORMALIZATION", [True, False]) and not keeps_fp32("CONVOLUTION", [True])


def test_compatibility_is_checked_before_the_build_and_recorded() -> None:
    from export.engine_config import check_build_compat

    check_build_compat("hardware", "8.0", "NVIDIA A100")
    check_build_compat("hardware", "unknown", "unknown (ImportError)")
    check_build_compat("version", "7.5", "Tesla T4")
    with pytest.raises(UserError, match="needs one to build on; this is Tesla T4 \\(compute 7.5\\)"):
        check_build_compat("hardware", "7.5", "Tesla T4")
    with pytest.raises(UserError, match="unknown compatibility 'ampere'"):
        check_build_compat("ampere", "8.6", "NVIDIA A10")
    plan = plan_build("10.13.0", True, True, "fp32")
    content = sidecar(_input(), Path("m.onnx"), default_profile(_input()), plan, tensorrt_version="10.13.0",
                      gpu_name="NVIDIA A10", compute_capability="8.6", compat="hardware")
    assert content["compat"] == "hardware" and content["compute_capability"] == "8.6"
    assert content["tensorrt_version"] == "10.13.0" and content["gpu_name"] == "NVIDIA A10"


class TimingConfig:
    """The two calls of `IBuilderConfig` a timing cache goes through; TensorRT returns False from
    `set_timing_cache` for a cache made by another TensorRT version or GPU."""

    def __init__(self, accepts: bytes) -> None:
        self.accepts = accepts
        self.attached: list[bytes] = []

    def create_timing_cache(self, data: bytes) -> bytes:
        return data

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        self.attached.append(cache)
        return cache in (self.accepts, b"")


def test_a_mismatched_timing_cache_is_replaced_not_silently_unused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from export.tensorrt import attach_timing_cache

    path = tmp_path / "trt.cache"
    path.write_bytes(b"cache of another GPU")
    config = TimingConfig(accepts=b"cache of this GPU")
    assert attach_timing_cache(config, path) == b""  # type: ignore[arg-type]
    assert config.attached == [b"cache of another GPU", b""]
    assert "made by another TensorRT version or GPU" in capsys.readouterr().err
    path.write_bytes(b"cache of this GPU")
    assert attach_timing_cache(config, path) == b"cache of this GPU"  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""
