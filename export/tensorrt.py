"""`build_engine`: an ONNX file -> a serialized TensorRT engine and its `.engine.json` sidecar.

A thin layer over TensorRT's Python API (10.x and 11.x); every decision it takes (profile, precision
path, sidecar) comes from `export.engine_config`, which is tested on the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cfnet.atomic import write_bytes
from cfnet.errors import UserError
from export.engine_config import (
    BuildPlan,
    Profile,
    Shape,
    check_build_compat,
    keeps_fp32,
    plan_build,
    read_onnx_input,
    resolve_profile,
    sidecar,
    write_sidecar,
)
from export.precision.int8 import require_tensorrt_int8
from export.precision.layer_precision import fp32_nodes, pin_listed_layers
from export.scratch import scratch_dir
from runtime.backends.availability import tensorrt_unavailable

if TYPE_CHECKING:  # the stubs of tensorrt-stubs; at run time TensorRT is imported inside the functions
    import tensorrt as trt

INSTALL_HINT = (
    "it needs an NVIDIA GPU with its driver: pip install 'cfnet[tensorrt]' (tensorrt, pycuda), "
    "see https://docs.nvidia.com/deeplearning/tensorrt/latest/installing-tensorrt/installing.html"
)


def open_builder() -> tuple[trt.ILogger, trt.Builder]:
    """`(logger, builder)` of a working TensorRT; a `UserError` when TensorRT or a GPU is missing.

    Detected by a working `tensorrt.Builder`: `import tensorrt` alone succeeds with the type stubs installed.
    """
    reason = tensorrt_unavailable()
    if reason is not None:
        raise UserError("TensorRT is not available", f"{reason}; {INSTALL_HINT}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    return logger, builder


def build_engine(
    onnx_path: str | Path,
    out: str | Path,
    *,
    fp16: bool = True,
    min_shape: Shape | None = None,
    opt_shape: Shape | None = None,
    max_shape: Shape | None = None,
    workspace_gb: float = 4,
    timing_cache: str | Path | None = None,
    compat: str = "none",
) -> Path:
    """Build a TensorRT engine from `onnx_path` into `out` (+ `out.json` sidecar) and return `out`.

    Shapes are `(N, C, H, W)`; missing ones default from the ONNX metadata (`cfnet.input_size`).
    `timing_cache` is read when it exists (a cache from another TensorRT or GPU is replaced, with a notice)
    and written back after the build. `compat`: `none`, `hardware` or `version` (`runtime.backends.tensorrt.COMPAT`).
    """
    onnx_path, out = Path(onnx_path), Path(out)
    onnx_input = read_onnx_input(onnx_path)
    require_tensorrt_int8(onnx_path)
    profile = resolve_profile(onnx_input, min_shape, opt_shape, max_shape)
    if workspace_gb <= 0:
        raise UserError(f"workspace of {workspace_gb} GB must be positive", "--workspace-gb")
    check_build_compat(compat, "unknown", "")
    logger, builder = open_builder()
    import tensorrt as trt

    gpu_name, capability = gpu_identity()
    check_build_compat(compat, capability, gpu_name)
    plan = plan_build(trt.__version__, hasattr(trt.BuilderFlag, "FP16"), fp16, onnx_input.precision)
    print(f"TensorRT {trt.__version__}: {plan.describe()}, compatibility: {compat}", file=sys.stderr)
    with scratch_dir("engine") as tmp:
        source = onnx_path
        if plan.convert_to_fp16:
            source = _fp16_copy(onnx_path, Path(tmp, "model.fp16.onnx"))
        network, parser = _parse(logger, builder, plan, source, onnx_path)
        if plan.fp32_layers:
            pin_listed_layers(network, onnx_input.metadata, onnx_input.nodes)
        config = _config(builder, network, plan, profile, workspace_gb, compat)
        cache = attach_timing_cache(config, timing_cache)
        serialized = builder.build_serialized_network(network, config)
        del parser
    if serialized is None:
        raise UserError("TensorRT failed to build the engine (its log above says why)", str(onnx_path))
    write_bytes(out, bytes(serialized))
    if timing_cache is not None:
        write_bytes(Path(timing_cache), bytes(cache.serialize()))
    content = sidecar(
        onnx_input,
        onnx_path,
        profile,
        plan,
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        compat=compat,
    )
    write_sidecar(content, out)
    return out


def gpu_identity() -> tuple[str, str]:
    """Name and compute capability (`8.6`) of CUDA device 0, through pycuda."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        device = cuda.Device(0)
        major, minor = device.compute_capability()
        return str(device.name()), f"{major}.{minor}"
    except Exception as exc:  # pycuda missing or failing: the engine is still usable, the sidecar says so
        return f"unknown ({type(exc).__name__})", "unknown"


def _fp16_copy(onnx_path: Path, target: Path) -> Path:
    import onnx

    from export.metadata import get_metadata, set_metadata
    from export.precision.fp16 import convert_to_mixed_fp16

    model = onnx.load(str(onnx_path))
    half = convert_to_mixed_fp16(model, fp32_nodes(get_metadata(model)))
    set_metadata(half, {**get_metadata(model), "cfnet.precision": "fp16"})
    onnx.save_model(half, str(target))
    return target


def _parse(
    logger: trt.ILogger, builder: trt.Builder, plan: BuildPlan, source: Path, shown: Path
) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    """The parsed network and its parser (which must outlive the network's use)."""
    import tensorrt as trt

    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        rejected = (
            "; ".join(f"node {e.node()} '{e.node_name()}' ({e.node_operator()}): {e.desc()}" for e in errors)
            or "no details"
        )
        raise UserError(f"TensorRT rejected the ONNX model: {rejected}", str(shown))
    return network, parser


def _config(
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    plan: BuildPlan,
    profile: Profile,
    workspace_gb: float,
    compat: str,
) -> trt.IBuilderConfig:
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.fp32_layers:
        floats = {trt.float32, trt.float16}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            inputs = [layer.get_input(k) for k in range(layer.num_inputs)]
            if keeps_fp32(layer.type.name, [t.dtype in floats for t in inputs if t is not None]):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    if layer.get_output(j).dtype in floats:
                        layer.set_output_type(j, trt.float32)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    try:
        if compat == "hardware":
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        elif compat == "version":
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    except AttributeError:  # a TensorRT release without these names (they are TensorRT 10's)
        raise UserError(f"TensorRT {trt.__version__} has no '--compat {compat}' setting", "--compat") from None
    optimisation = builder.create_optimization_profile()
    optimisation.set_shape(
        profile.name, trt.Dims(list(profile.min)), trt.Dims(list(profile.opt)), trt.Dims(list(profile.max))
    )
    config.add_optimization_profile(optimisation)
    return config


def attach_timing_cache(config: trt.IBuilderConfig, path: str | Path | None) -> trt.ITimingCache:
    """The timing cache of the build, from `path` when it exists. TensorRT refuses (returns False for) a cache
    made by another TensorRT version or GPU: the build then starts a fresh one, which replaces the file."""
    previous = Path(path).read_bytes() if path is not None and Path(path).is_file() else b""
    cache = config.create_timing_cache(previous)
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    if previous:
        print(f"warning: timing cache {path} was made by another TensorRT version or GPU: starting a fresh one "
              "(it replaces the file after the build)", file=sys.stderr)
        cache = config.create_timing_cache(b"")
        if config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
    raise UserError("TensorRT refused the timing cache", str(path) if path is not None else "--timing-cache")
