"""What `build-engine` decides before TensorRT is touched: the ONNX input, the optimisation profile, the
precision path for a TensorRT version, and the engine's `.engine.json` sidecar. All of it runs on the CPU."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cfnet.atomic import write_bytes
from cfnet.errors import UserError
from export.metadata import get_metadata, load_onnx, size_divisor
from runtime.artifact import sidecar_path
from runtime.backends.tensorrt import AMPERE, COMPAT, parse_capability

Shape = tuple[int, int, int, int]
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")  # kept in FP32 under TensorRT 10's FP16 flag


@dataclass(frozen=True)
class OnnxInput:
    """The single input of an ONNX model: name, dims (ints, or None where dynamic), cfnet metadata and the names
    of the graph's nodes."""

    name: str
    dims: tuple[int | None, ...]
    metadata: dict[str, str]
    nodes: frozenset[str] = frozenset()

    @property
    def precision(self) -> str:
        return self.metadata.get("cfnet.precision", "fp32")

    @property
    def divisor(self) -> int:
        return size_divisor(self.metadata)


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimisation profile for the input tensor `name`."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class BuildPlan:
    """How one TensorRT version builds: network flags, builder flags and the ONNX it parses."""

    strongly_typed: bool
    fp16_flag: bool
    fp32_layers: bool  # pin FP32_LAYER_TYPES to FP32 with OBEY_PRECISION_CONSTRAINTS
    convert_to_fp16: bool  # parse the mixed-precision fp16 ONNX made from the given fp32 one
    precision: str

    def describe(self) -> str:
        if self.strongly_typed:
            source = "mixed fp16 ONNX made from fp32" if self.convert_to_fp16 else "types of the ONNX"
            return f"strongly typed network ({source}), {self.precision}"
        if self.fp16_flag:
            return f"FP16 builder flag, {', '.join(FP32_LAYER_TYPES).lower()} layers kept in FP32"
        return "fp32"


def read_onnx_input(path: str | Path) -> OnnxInput:
    """The input and metadata of ONNX file `path` (weights not loaded); a non-ONNX file is a `UserError`."""
    proto = load_onnx(path, weights=False)
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise UserError(f"expected one input tensor, the model has {len(inputs)}", str(path))
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim)
    if len(dims) != 4:
        raise UserError(f"expected an N x C x H x W input, got {len(dims)} dimensions", str(path))
    return OnnxInput(inputs[0].name, dims, get_metadata(proto), frozenset(n.name for n in proto.graph.node))


def default_profile(onnx_input: OnnxInput) -> Profile:
    """min/opt/max from the metadata: opt = 1 x C x input_size, min = half of it, max = twice it (per side),
    sides rounded up to the size divisor; fixed dimensions of the ONNX input are kept."""
    size = onnx_input.metadata.get("cfnet.input_size")
    if size is None:
        if None in onnx_input.dims:
            raise UserError("the ONNX has no cfnet.input_size metadata", "pass --opt-shape (and --min/--max-shape)")
        static = _shape(onnx_input.dims)
        return Profile(onnx_input.name, static, static, static)
    h, w = _size(size)
    div = onnx_input.divisor
    channels = onnx_input.dims[1] or 3
    opt = _fixed(onnx_input, (1, channels, _up(h, div), _up(w, div)))
    low = _fixed(onnx_input, (1, channels, _up(h // 2, div), _up(w // 2, div)))
    high = _fixed(onnx_input, (1, channels, _up(2 * h, div), _up(2 * w, div)))
    return Profile(onnx_input.name, low, opt, high)


def resolve_profile(
    onnx_input: OnnxInput,
    min_shape: Shape | None = None,
    opt_shape: Shape | None = None,
    max_shape: Shape | None = None,
) -> Profile:
    """The profile from the given shapes, the missing ones from `default_profile` (widened to include the
    given opt shape); validated."""
    if min_shape is not None and opt_shape is not None and max_shape is not None:
        profile = Profile(onnx_input.name, min_shape, opt_shape, max_shape)
    else:
        if opt_shape is not None and "cfnet.input_size" not in onnx_input.metadata:
            default = Profile(onnx_input.name, opt_shape, opt_shape, opt_shape)
        else:
            default = default_profile(onnx_input)
        opt = opt_shape or default.opt
        low = min_shape or _shape(tuple(min(a, b) for a, b in zip(default.min, opt, strict=True)))
        high = max_shape or _shape(tuple(max(a, b) for a, b in zip(default.max, opt, strict=True)))
        profile = Profile(onnx_input.name, low, opt, high)
    validate_profile(onnx_input, profile)
    return profile


def validate_profile(onnx_input: OnnxInput, profile: Profile) -> None:
    """Refuse profiles TensorRT would refuse, or that the model cannot run: `UserError` naming the shapes."""
    shapes = {"min": profile.min, "opt": profile.opt, "max": profile.max}
    for label, shape in shapes.items():
        if len(shape) != 4 or min(shape) < 1:
            raise UserError(
                f"malformed {label} shape {_text(shape)}: expected 4 positive dims NxCxHxW", f"--{label}-shape"
            )
        for axis, (got, fixed) in enumerate(zip(shape, onnx_input.dims, strict=True)):
            if fixed is not None and got != fixed:
                what = "channel count" if axis == 1 else f"dimension {axis}"
                raise UserError(
                    f"{label} shape {_text(shape)}: {what} {got} does not match the model's fixed {fixed}",
                    f"--{label}-shape",
                )
        if onnx_input.dims[1] is None and shape[1] != 3:
            raise UserError(
                f"{label} shape {_text(shape)}: the model takes 3 channels, not {shape[1]}", f"--{label}-shape"
            )
    for low, high in (("min", "opt"), ("opt", "max"), ("min", "max")):
        if any(a > b for a, b in zip(shapes[low], shapes[high], strict=True)):
            raise UserError(
                f"{low} shape {_text(shapes[low])} exceeds {high} shape {_text(shapes[high])} in some dimension",
                "need min <= opt <= max in every dimension",
            )
    div = onnx_input.divisor
    if profile.opt[2] % div or profile.opt[3] % div:
        raise UserError(
            f"opt shape {_text(profile.opt)}: H and W must be multiples of the model's size divisor {div}",
            "--opt-shape",
        )


def plan_build(version: str, has_fp16_flag: bool, fp16: bool, onnx_precision: str) -> BuildPlan:
    """The precision path: an ONNX that already carries its types (fp16, int8) builds strongly typed on any
    version; an fp32 ONNX builds with the FP16 flag on TensorRT 10, strongly typed from the fp16 conversion
    on TensorRT 11+ (which has no FP16 flag)."""
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise UserError(f"unrecognised TensorRT version '{version}'", "tensorrt.__version__") from None
    if major < 10:
        raise UserError(f"TensorRT {version} is too old", "cfnet needs TensorRT 10 or newer")
    if onnx_precision in ("fp16", "int8"):
        return BuildPlan(True, False, False, False, onnx_precision)
    if major == 10 and has_fp16_flag:
        return BuildPlan(False, fp16, fp16, False, "fp16" if fp16 else "fp32")
    return BuildPlan(True, False, False, fp16, "fp16" if fp16 else "fp32")


def keeps_fp32(layer_type: str, inputs_are_float: Sequence[bool]) -> bool:
    """Whether a layer is pinned to FP32 under the FP16 flag: normalisation, softmax and reductions of float
    tensors. A reduction of integers (shape arithmetic) keeps its integer type: FP32 there breaks the build."""
    return layer_type in FP32_LAYER_TYPES and all(inputs_are_float)


def check_build_compat(compat: str, compute_capability: str, gpu_name: str) -> None:
    """Refuse a `--compat` this build cannot give: an unknown level, or `hardware` (Ampere and newer) on an
    older GPU, which TensorRT only supports building on Ampere or newer. An unknown GPU is not judged."""
    if compat not in COMPAT:
        raise UserError(f"unknown compatibility '{compat}'", f"--compat: choose from {', '.join(COMPAT)}")
    capability = parse_capability(compute_capability)
    if compat == "hardware" and capability is not None and capability < AMPERE:
        raise UserError(
            f"--compat hardware builds engines for Ampere and newer GPUs and needs one to build on; this is "
            f"{gpu_name} (compute {compute_capability}): build on an Ampere-or-newer GPU, or use --compat none",
            "--compat",
        )


def sidecar(
    onnx_input: OnnxInput,
    onnx_path: Path,
    profile: Profile,
    plan: BuildPlan,
    *,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
    compat: str = "none",
) -> dict[str, Any]:
    """The `.engine.json` content: the ONNX metadata (precision set to the engine's) and how it was built,
    with what the runtime checks before it loads the engine (TensorRT version, GPU, compute capability and
    the compatibility the engine was built with)."""
    return {
        "metadata": {**onnx_input.metadata, "cfnet.precision": plan.precision},
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu_name,
        "compute_capability": compute_capability,
        "compat": compat,
        "profile": profile.as_dict(),
        "precision_path": plan.describe(),
        "onnx": str(onnx_path),
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_sidecar(content: dict[str, Any], engine: Path) -> Path:
    """Write the sidecar of `engine` atomically; returns its path."""
    path = sidecar_path(engine)
    write_bytes(path, (json.dumps(content, indent=2) + "\n").encode())
    return path


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"malformed cfnet.input_size '{text}' in the ONNX metadata", "expected HxW")
    return int(parts[0]), int(parts[1])


def _up(value: int, divisor: int) -> int:
    return max(divisor, -(-value // divisor) * divisor)


def _fixed(onnx_input: OnnxInput, shape: Shape) -> Shape:
    return _shape(tuple(f if f is not None else s for s, f in zip(shape, onnx_input.dims, strict=True)))


def _shape(dims: tuple[int | None, ...]) -> Shape:
    a, b, c, d = (int(x or 1) for x in dims)
    return a, b, c, d


def _text(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)
