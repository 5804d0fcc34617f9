"""`cfnet export triton`: a cfnet ONNX model or TensorRT engine -> a Triton Inference Server model repository.

The repository holds four models: `{name}_model` (the network: ONNX Runtime, TensorRT plan, or ONNX Runtime in
the Python backend), `{name}_preprocess` and `{name}_postprocess` (Python backend, running the runtime's own
pre/post-processing) and the ensemble `{name}`: `frames` (uint8 BGR, `N x H x W x 3`) -> `mask` (uint8, `N x H x W`).
Each Python model's folder holds a copy of the `runtime` package, so the repository is self-contained on any
server whose Python has numpy, OpenCV (and ONNX Runtime for `--backend python`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import runtime
from cfnet.atomic import umask
from cfnet.errors import UserError
from export.metadata import get_metadata, load_onnx
from runtime.artifact import ModelMetadata, metadata_from_props, read_sidecar
from runtime.backends.onnxruntime import content_key
from runtime.triton.config import ENGINE_PARAMETERS, config_parameters, model_step

BACKENDS = ("onnxruntime", "tensorrt", "python")
DEFAULT_MAX_BATCH = 8
"""`--max-batch` of a model that accepts any batch (an ONNX with a dynamic batch); otherwise the model's own."""
TRT_CACHE = "/tmp/cfnet-trt-cache"
"""Prefix of the folder where the TensorRT accelerator of an ONNX model caches its engines, one per model and
content (`trt_engine_cache_path`): one level, as ONNX Runtime's TensorRT EP creates only the last one."""
RUNTIME_PACKAGE = Path(runtime.__file__).resolve().parent
SHIM = '''"""A Triton Python-backend model written by `cfnet export triton`: the runtime package beside it runs it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime.triton.models.{module} import TritonPythonModel  # noqa: E402,F401
'''


class Enum(str):
    """A protobuf enum value: written unquoted in the text format."""


@dataclass(frozen=True)
class Artifact:
    """What the repository needs to know about the model file."""

    path: Path
    kind: str  # "onnx" or "engine"
    props: dict[str, str]  # the cfnet.* metadata as strings
    metadata: ModelMetadata
    max_batch: int | None  # the largest batch the file accepts (None: any)
    size: tuple[int, int] | None  # fixed H, W (None: dynamic)
    dims: dict[str, list[int]] = field(default_factory=dict)  # an ONNX's images/outputs shapes, batch first (-1: any)
    engine: dict[str, str] = field(default_factory=dict)  # an engine's TensorRT version, compat, GPU (its sidecar)

    @property
    def static_batch(self) -> bool:
        """An ONNX whose batch dimension is a number: Triton runs it unbatched (`max_batch_size: 0`, full dims),
        as its ONNX Runtime backend requires a first dimension of -1 for batching."""
        return self.kind == "onnx" and self.max_batch is not None

    @property
    def outputs(self) -> list[str]:
        """The network's outputs (`cfnet.outputs`): `logits`, `mask` or both."""
        names = json.loads(self.props.get("cfnet.outputs", '["logits"]'))
        return [n for n in ("logits", "mask") if n in names] or ["logits"]

    @property
    def output(self) -> str:
        """What the model step hands on: its in-graph `mask` when it has one (`--output mask|both`), else `logits`."""
        return "mask" if "mask" in self.outputs else "logits"

    def output_tensor(self, name: str | None = None) -> dict[str, Any]:
        """Output `name` (default: the one handed on): `mask` (uint8 `H x W`) or `logits` (fp32 `C x H x W`),
        batched."""
        if (name or self.output) == "mask":
            return _tensor("mask", "UINT8", [-1, -1])
        return _tensor("logits", "FP32", [self.metadata.num_classes, -1, -1])

    def network_tensor(self, name: str, dtype: str) -> dict[str, Any]:
        """Tensor `name` as the network step's config lists it: an ONNX's own shape (Triton's ONNX Runtime backend
        compares output dims exactly), without the batch dimension unless the batch is static; an engine's from the
        metadata."""
        full = self.dims.get(name)
        if full is None:
            return _tensor("images", dtype, [3, -1, -1]) if name == "images" else self.output_tensor(name)
        return _tensor(name, dtype, full if self.static_batch else full[1:])


def _shape(value: Any) -> list[int]:
    """An ONNX value's shape, -1 where it is not a number."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def read_artifact(path: str | Path) -> Artifact:
    """The model file's metadata and input limits; files without cfnet metadata are refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError("model not found", str(path))
    if path.suffix == ".onnx":
        proto = load_onnx(path, weights=False)
        props = get_metadata(proto)
        image = next((i for i in proto.graph.input if i.name == "images"), proto.graph.input[0])
        dims = {"images": _shape(image), **{o.name: _shape(o) for o in proto.graph.output}}
        shape = dims["images"]
        max_batch = shape[0] if shape and shape[0] > 0 else None
        size = (shape[2], shape[3]) if len(shape) == 4 and min(shape[2:]) > 0 else None
        kind, engine = "onnx", {}
    elif path.suffix in (".engine", ".plan"):
        side = read_sidecar(path)
        props = {k: v if isinstance(v, str) else json.dumps(v) for k, v in side.items() if k.startswith("cfnet.")}
        profile = side.get("profile") or {}
        max_shape = profile.get("max") or []
        max_batch = int(max_shape[0]) if max_shape else None
        size, dims = None, {}
        kind = "engine"
        engine = {k: _text(side[k]) for k in ENGINE_PARAMETERS if side.get(k) is not None}
    else:
        raise UserError(f"unknown model file type '{path.suffix}': expected .onnx or .engine", str(path))
    if not props:
        raise UserError("the model has no cfnet metadata (export it with `cfnet export onnx`)", str(path))
    return Artifact(path, kind, props, metadata_from_props(props, str(path)), max_batch, size, dims, engine)


def _text(value: Any) -> str:
    """A sidecar field as a config parameter's string: a compute capability `[8, 6]` becomes `8.6`."""
    return ".".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)


def to_pbtxt(message: Mapping[str, Any], indent: int = 0) -> str:
    """A dict as protobuf text format: dicts are messages, lists repeated fields, `Enum` values unquoted.

    Map fields are lists of `{"key": ..., "value": ...}` entries, as the text format spells them.
    """
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        items = value if isinstance(value, list) else [value]
        if items and all(not isinstance(v, Mapping) for v in items) and isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in items)}]")
            continue
        for item in items:
            if isinstance(item, Mapping):
                lines.append(f"{pad}{key} {{\n{to_pbtxt(item, indent + 1)}{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _tensor(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": Enum(f"TYPE_{dtype}"), "dims": dims}


def model_config(
    artifact: Artifact, name: str, backend: str, max_batch: int, instances: int, queue_delay_us: int, gpu: bool
) -> dict[str, Any]:
    """The config of `{name}_model`: the network, batched dynamically (unbatched when its batch is static), with
    the cfnet metadata (and an engine's TensorRT version and compatibility) as parameters."""
    config: dict[str, Any] = {"name": model_step(name)}
    if backend == "onnxruntime":
        config["platform"] = "onnxruntime_onnx"
    elif backend == "tensorrt":
        config["platform"] = "tensorrt_plan"
    else:
        config["backend"] = "python"
    dtypes = {"images": "FP32", "logits": "FP32", "mask": "UINT8"}
    # every output of a network Triton runs itself (its TensorRT backend refuses a plan with an unlisted output:
    # an `--output both` model); the Python step returns the one output the ensemble maps
    outputs = artifact.outputs if backend != "python" else [artifact.output]
    config.update(
        max_batch_size=0 if artifact.static_batch else max_batch,
        input=[artifact.network_tensor("images", "FP32")],
        output=[artifact.network_tensor(n, dtypes[n]) for n in outputs],
        instance_group=[{"count": instances, "kind": Enum("KIND_GPU" if gpu else "KIND_CPU")}],
    )
    if not artifact.static_batch:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": queue_delay_us}
    if backend == "onnxruntime" and gpu:
        accelerator = {
            "name": "tensorrt",
            "parameters": [
                {"key": "precision_mode", "value": "FP16"},
                {"key": "trt_engine_cache_enable", "value": "1"},
                {"key": "trt_engine_cache_path", "value": trt_cache_path(artifact.path, name)},
            ],
        }
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [accelerator]}}
    batch = artifact.dims["images"][:1] if artifact.static_batch else []
    warm = [*batch, 3, *(artifact.size or _warmup_size(artifact.metadata))]
    config["model_warmup"] = [
        {
            "name": "warmup",
            "batch_size": 1,
            "inputs": [{"key": "images", "value": {"data_type": Enum("TYPE_FP32"), "dims": warm, "zero_data": True}}],
        }
    ]
    config["parameters"] = config_parameters({**artifact.props, **artifact.engine})
    return config


def trt_cache_path(model: Path, name: str) -> str:
    """The TensorRT accelerator's engine cache of `model` as `{name}_model`: keyed by the model's name and content
    (ONNX Runtime names cached engines by file name and graph, not weights, and every file here is `model.onnx`:
    two models, or a re-export, would load each other's engines; onnxruntime_backend issue 124)."""
    return f"{TRT_CACHE}-{model_step(name)}-{content_key(model, fp16=True)}"


def _warmup_size(meta: ModelMetadata) -> tuple[int, int]:
    d = meta.size_divisor
    return -(-meta.input_size[0] // d) * d, -(-meta.input_size[1] // d) * d


def python_config(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], max_batch: int,
                  instances: int, props: Mapping[str, str]) -> dict[str, Any]:
    """The config of a Python-backend pre/post-processing model (CPU instances)."""
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch,
        "input": inputs,
        "output": outputs,
        "instance_group": [{"count": instances, "kind": Enum("KIND_CPU")}],
        "parameters": config_parameters(props),
    }


def ensemble_config(name: str, max_batch: int, output: str = "logits") -> dict[str, Any]:
    """The ensemble `{name}`: frames -> `{name}_preprocess` -> `{name}_model` -> `{name}_postprocess` -> mask.

    `output`: what the model step returns (`logits`, or `mask` for a model with the argmax in its graph).
    """

    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
        return {
            "model_name": model,
            "model_version": -1,
            "input_map": [{"key": k, "value": v} for k, v in inputs.items()],
            "output_map": [{"key": k, "value": v} for k, v in outputs.items()],
        }

    return {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": max_batch,
        "input": [_tensor("frames", "UINT8", [-1, -1, 3])],
        "output": [_tensor("mask", "UINT8", [-1, -1])],
        "ensemble_scheduling": {
            "step": [
                step(f"{name}_preprocess", {"frames": "frames"}, {"images": "images", "info": "info"}),
                step(model_step(name), {"images": "images"}, {output: "scores"}),
                step(f"{name}_postprocess", {output: "scores", "info": "info"}, {"mask": "mask"}),
            ]
        },
    }


def repository_configs(
    artifact: Artifact, name: str, backend: str, max_batch: int, instances: int, queue_delay_us: int, gpu: bool
) -> dict[str, dict[str, Any]]:
    """Every model's config, by model folder name."""
    pre = python_config(
        f"{name}_preprocess",
        [_tensor("frames", "UINT8", [-1, -1, 3])],
        # a network of fixed H, W gets its frames padded to them (the preprocess model reads these dims)
        [_tensor("images", "FP32", [3, *(artifact.size or (-1, -1))]), _tensor("info", "INT32", [6])],
        max_batch, instances, artifact.props,
    )
    post = python_config(
        f"{name}_postprocess",
        [artifact.output_tensor(), _tensor("info", "INT32", [6])],
        [_tensor("mask", "UINT8", [-1, -1])],
        max_batch, instances, artifact.props,
    )
    return {
        name: ensemble_config(name, max_batch, artifact.output),
        f"{name}_preprocess": pre,
        model_step(name): model_config(artifact, name, backend, max_batch, instances, queue_delay_us, gpu),
        f"{name}_postprocess": post,
    }


def export_triton(
    model: str | Path,
    out: str | Path,
    *,
    name: str = "cfnet",
    backend: str | None = None,
    max_batch: int | None = None,
    instances: int = 1,
    queue_delay_us: int = 2000,
    gpu: bool = False,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the Triton model repository for `model` into `out`; returns the model folders by name.

    `backend`: `onnxruntime` (default for `.onnx`), `tensorrt` (default for `.engine`) or `python` (ONNX Runtime
    inside the Python backend). `max_batch`: default the model's own (an engine's profile, a static ONNX's batch),
    else `DEFAULT_MAX_BATCH`. `gpu`: instances of the network on the GPU (ONNX Runtime with the TensorRT
    execution accelerator, FP16; always for a TensorRT plan). The models are built in a temp folder beside `out`
    and renamed into place; models of the same names in `out` need `overwrite`.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise UserError(
            f"invalid model name '{name}'",
            "ASCII letters, digits, '-' and '_': Triton's Python backend cannot load other names",
        )
    artifact = read_artifact(model)
    backend = backend or ("tensorrt" if artifact.kind == "engine" else "onnxruntime")
    if backend not in BACKENDS:
        raise UserError(f"unknown Triton backend '{backend}'", f"choose from {', '.join(BACKENDS)}")
    if (backend == "tensorrt") != (artifact.kind == "engine"):
        wanted = "a TensorRT engine (.engine)" if backend == "tensorrt" else "an ONNX model (.onnx)"
        raise UserError(f"--backend {backend} needs {wanted}", str(artifact.path))
    max_batch = max_batch if max_batch is not None else artifact.max_batch or DEFAULT_MAX_BATCH
    if max_batch < 1 or instances < 1 or queue_delay_us < 0:
        raise UserError("--max-batch and --instances must be >= 1, --queue-delay-us >= 0", "cfnet export triton")
    if artifact.max_batch is not None and max_batch > artifact.max_batch:
        raise UserError(
            f"--max-batch {max_batch} exceeds the model's largest batch {artifact.max_batch}",
            f"{artifact.path}: export with a dynamic batch (or a larger profile)",
        )
    if artifact.static_batch and max_batch != artifact.max_batch:
        raise UserError(
            f"--max-batch {max_batch}: the model's batch is fixed at {artifact.max_batch}",
            f"{artifact.path}: leave --max-batch out, or export with a dynamic batch",
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError("the model repository must be a folder", str(out))
    gpu = gpu or backend == "tensorrt"  # a plan runs on the GPU only
    configs = repository_configs(artifact, name, backend, max_batch, instances, queue_delay_us, gpu)
    clash = [n for n in configs if (out / n).exists()]
    if clash and not overwrite:
        raise UserError(f"model '{clash[0]}' exists in the repository; pass --overwrite to replace it", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for folder, config in configs.items():
            _write_model(staging / folder, config, artifact, backend, folder, name)
        return _move_into(staging, out, list(configs))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_model(folder: Path, config: dict[str, Any], artifact: Artifact, backend: str, model: str, name: str) -> None:
    version = folder / "1"
    version.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(to_pbtxt(config))
    module = {f"{name}_preprocess": "preprocess_model", f"{name}_postprocess": "postprocess_model"}.get(model)
    if model == model_step(name):
        if backend == "tensorrt":
            shutil.copyfile(artifact.path, version / "model.plan")
            (folder / "README.md").write_text(plan_readme(model, artifact))
            return
        shutil.copyfile(artifact.path, version / "model.onnx")
        if backend == "python":
            module = "onnxruntime_model"
    if module is not None:
        (version / "model.py").write_text(SHIM.format(module=module))
        shutil.copytree(RUNTIME_PACKAGE, version / "runtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def plan_readme(model: str, artifact: Artifact) -> str:
    """What a server needs to run the TensorRT plan of `model` (the model folder's README.md)."""
    info = {k: artifact.engine.get(k, "?") for k in ("tensorrt_version", "compat", "gpu_name", "compute_capability")}
    runs_on = {
        "hardware": f"TensorRT {info['tensorrt_version']} exactly, on any GPU of compute capability 8.0 or newer",
        "version": f"TensorRT {info['tensorrt_version']} or later, on a {info['gpu_name']}; start the server with "
        "`--backend-config=tensorrt,version-compatible=true` (`cfnet serve` adds it for such a repository)",
    }.get(info["compat"], f"TensorRT {info['tensorrt_version']} exactly, on a {info['gpu_name']}")
    return (
        f"# {model}\n\n"
        f"A TensorRT plan written by `cfnet export triton` from `{artifact.path.name}`, built with TensorRT "
        f"{info['tensorrt_version']} on a {info['gpu_name']} (compute {info['compute_capability']}), "
        f"compatibility `{info['compat']}`.\n\n"
        f"It runs on Triton servers with {runs_on}. The config's `parameters` carry the same fields; a server with "
        "another TensorRT cannot deserialize the plan and leaves the model unavailable.\n"
    )


def _move_into(staging: Path, out: Path, folders: list[str]) -> dict[str, Path]:
    """Rename the staged model folders into `out` (the whole staging folder when `out` does not exist yet)."""
    if not out.exists():
        os.chmod(staging, 0o777 & ~umask())
        os.replace(staging, out)
        return {f: out / f for f in folders}
    for folder in folders:
        target = out / folder
        if target.exists():
            old = staging / f".{folder}.old"
            os.replace(target, old)
        os.replace(staging / folder, target)
    return {f: out / f for f in folders}
