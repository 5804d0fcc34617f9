"""`cfnet export triton`: every config.pbtxt parses with Triton's own schema; atomic, refusing, complete repos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from cfnet.cli import main
from cfnet.errors import UserError
from export.triton import export_triton
from runtime.backends import read_metadata
from runtime.triton.config import config_metadata
from tests.runtime.helpers import export_tiny, tiny_metadata

MODELS = ("cfnet", "cfnet_preprocess", "cfnet_model", "cfnet_postprocess")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("model") / "tiny.onnx", tiny_metadata())


@pytest.fixture(scope="module")
def engine(tiny: Path) -> Path:
    """An engine file as `cfnet build-engine` leaves it: the plan (opaque bytes here) and its JSON sidecar."""
    path = tiny.with_name("tiny.engine")
    path.write_bytes(b"plan bytes")
    sidecar = {"metadata": tiny_metadata(), "profile": {"input": "images", "min": [1, 3, 32, 32],
                                                        "opt": [2, 3, 48, 64], "max": [4, 3, 96, 128]}}
    path.with_name("tiny.engine.json").write_text(json.dumps(sidecar))
    return path


def parse(repo: Path, model: str) -> model_config_pb2.ModelConfig:
    """A config through Triton's own schema (an unknown field or a malformed value raises)."""
    return text_format.Parse((repo / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def as_json(config: model_config_pb2.ModelConfig) -> dict[str, object]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(config, preserving_proto_field_name=True)


@pytest.mark.parametrize(
    ("backend", "gpu", "platform", "backend_field", "file"),
    [
        ("onnxruntime", False, "onnxruntime_onnx", "", "model.onnx"),
        ("onnxruntime", True, "onnxruntime_onnx", "", "model.onnx"),
        ("python", False, "", "python", "model.py"),
        ("tensorrt", False, "tensorrt_plan", "", "model.plan"),  # a plan's instances are on the GPU regardless
    ],
)
def test_every_variant_parses_with_tritons_schema(
    tiny: Path, engine: Path, tmp_path: Path, backend: str, gpu: bool, platform: str, backend_field: str, file: str
) -> None:
    source = engine if backend == "tensorrt" else tiny
    repo = tmp_path / "repo"
    export_triton(source, repo, backend=backend, gpu=gpu, max_batch=4, instances=2, queue_delay_us=500)
    assert sorted(p.name for p in repo.iterdir()) == sorted(MODELS)
    configs = {m: parse(repo, m) for m in MODELS}

    model = configs["cfnet_model"]
    assert (model.platform, model.backend) == (platform, backend_field)
    assert (repo / "cfnet_model" / "1" / file).is_file()
    assert model.max_batch_size == 4
    assert model.dynamic_batching.max_queue_delay_microseconds == 500
    kinds = model_config_pb2.ModelInstanceGroup
    on_gpu = gpu or platform == "tensorrt_plan"
    assert [(g.count, g.kind) for g in model.instance_group] == [(2, kinds.KIND_GPU if on_gpu else kinds.KIND_CPU)]
    assert list(model.input[0].dims) == [3, -1, -1] and model.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(model.output[0].dims) == [4, -1, -1]
    assert list(model.model_warmup[0].inputs["images"].dims) == [3, 48, 64]
    accelerators = model.optimization.execution_accelerators.gpu_execution_accelerator
    if backend == "onnxruntime" and gpu:
        assert accelerators[0].name == "tensorrt" and accelerators[0].parameters["precision_mode"] == "FP16"
    else:
        assert len(accelerators) == 0
    # the metadata the client and the Python models read back equals the artifact's own
    assert config_metadata(as_json(model)) == read_metadata(source)
    assert config_metadata(as_json(configs["cfnet_preprocess"])) == read_metadata(source)

    ensemble = configs["cfnet"]
    assert ensemble.platform == "ensemble"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == list(MODELS[1:])
    assert (ensemble.input[0].data_type, list(ensemble.input[0].dims)) == (model_config_pb2.TYPE_UINT8, [-1, -1, 3])
    assert (ensemble.output[0].data_type, list(ensemble.output[0].dims)) == (model_config_pb2.TYPE_UINT8, [-1, -1])
    # every tensor an ensemble step maps exists in that step's model config
    for step in ensemble.ensemble_scheduling.step:
        target = configs[step.model_name]
        assert set(step.input_map) == {t.name for t in target.input}
        assert set(step.output_map) == {t.name for t in target.output}
    for python_model in ("cfnet_preprocess", "cfnet_postprocess"):
        assert configs[python_model].backend == "python"
        assert (repo / python_model / "1" / "runtime" / "preprocess.py").is_file()  # self-contained
        assert "from runtime.triton.models" in (repo / python_model / "1" / "model.py").read_text()


@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt", "python"])
def test_a_model_with_both_outputs_lists_both_and_the_ensemble_maps_the_mask(
    tiny: Path, tmp_path: Path, backend: str
) -> None:
    """Issue 22 item 2: Triton's TensorRT backend refuses a plan with an output its config does not list
    ("expected configuration for output", tensorrt_backend src/instance_state.cc); the ensemble uses the mask."""
    from export.mask import write_mask_variant

    both = write_mask_variant(tiny, tmp_path / "both.onnx", output="both")
    source = both
    if backend == "tensorrt":
        source = tmp_path / "both.engine"
        source.write_bytes(b"plan bytes")
        metadata = {**tiny_metadata(), "cfnet.outputs": json.dumps(["logits", "mask"])}
        source.with_name("both.engine.json").write_text(json.dumps({"metadata": metadata}))
    repo = tmp_path / "repo"
    export_triton(source, repo, backend=backend, max_batch=1)
    configs = {m: parse(repo, m) for m in MODELS}
    outputs = {o.name: (o.data_type, list(o.dims)) for o in configs["cfnet_model"].output}
    served = {"mask": (model_config_pb2.TYPE_UINT8, [-1, -1])}
    if backend != "python":  # the Python step returns only what the ensemble maps
        served["logits"] = (model_config_pb2.TYPE_FP32, [4, -1, -1])
    assert outputs == served
    step = configs["cfnet"].ensemble_scheduling.step[1]
    assert step.model_name == "cfnet_model" and dict(step.output_map) == {"mask": "scores"}
    assert [i.name for i in configs["cfnet_postprocess"].input] == ["mask", "info"]


def test_an_existing_model_needs_overwrite_and_no_temp_folder_is_left(tiny: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "other").mkdir(parents=True)  # a model of someone else's: kept
    export_triton(tiny, repo, backend="python")
    with pytest.raises(UserError, match="'cfnet' exists in the repository; pass --overwrite"):
        export_triton(tiny, repo, backend="python", max_batch=2)
    assert parse(repo, "cfnet_model").max_batch_size == 8
    export_triton(tiny, repo, backend="python", max_batch=2, overwrite=True)
    assert parse(repo, "cfnet_model").max_batch_size == 2
    assert sorted(p.name for p in repo.iterdir()) == sorted([*MODELS, "other"])
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "tensorrt"}, "--backend tensorrt needs a TensorRT engine"),
        ({"max_batch": 0}, "--max-batch and --instances must be >= 1"),
        ({"name": "bad name"}, "invalid model name"),
        ({"name": "名前ñ"}, "invalid model name '名前ñ'"),  # Triton's Python backend fails on it (issue 25 item 5)
    ],
)
def test_bad_requests_are_refused_before_anything_is_written(
    tiny: Path, tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        export_triton(tiny, tmp_path / "repo", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_an_engine_batch_above_its_profile_and_a_model_without_metadata_are_refused(
    engine: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="--max-batch 8 exceeds the model's largest batch 4"):
        export_triton(engine, tmp_path / "repo", max_batch=8)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="must be a folder"):
        export_triton(engine, tmp_path / "file", max_batch=4)
    bare = export_tiny(tmp_path / "bare.onnx", None)
    with pytest.raises(UserError, match="no cfnet metadata"):
        export_triton(bare, tmp_path / "repo")


def test_max_batch_defaults_to_the_engines_profile_and_to_8_for_a_dynamic_onnx(
    tiny: Path, engine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 22 item 3: `cfnet export triton model.engine`, as documented, was refused (default 8 > profile)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "triton", str(engine), "--out", str(tmp_path / "engine-repo")])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert {parse(tmp_path / "engine-repo", m).max_batch_size for m in MODELS} == {4}
    export_triton(tiny, tmp_path / "onnx-repo")
    assert parse(tmp_path / "onnx-repo", "cfnet_model").max_batch_size == 8


def test_the_cli_writes_the_repository(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "triton", str(tiny), "--out", str(tmp_path / "repo"), "--backend", "python"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.count("wrote ") == 4
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "triton", str(tiny), "--out", str(tmp_path / "repo")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: model 'cfnet' exists")


def test_a_static_onnx_is_served_unbatched_with_its_full_shape(tmp_path: Path) -> None:
    """Issue 22 item 3: Triton's ONNX Runtime backend requires a first dimension of -1 for `max_batch_size > 0`
    (onnxruntime_backend src/onnxruntime_utils.cc, CompareDimsSupported) and compares output dims exactly: a
    static batch-1 ONNX gets `max_batch_size: 0` and its own full shapes; the ensemble around it stays batched
    at 1 (Triton allows non-batching steps whose full shapes agree)."""
    static = export_tiny(tmp_path / "static.onnx", tiny_metadata(), fixed_size=(32, 40))
    with pytest.raises(UserError, match="--max-batch 2 exceeds the model's largest batch 1"):
        export_triton(static, tmp_path / "repo", max_batch=2)
    export_triton(static, tmp_path / "repo")
    model = parse(tmp_path / "repo", "cfnet_model")
    assert model.max_batch_size == 0 and not model.HasField("dynamic_batching")
    assert list(model.input[0].dims) == [1, 3, 32, 40]
    assert [(o.name, list(o.dims)) for o in model.output] == [("logits", [1, 4, 32, 40])]
    assert list(model.model_warmup[0].inputs["images"].dims) == [1, 3, 32, 40]
    batched = ("cfnet", "cfnet_preprocess", "cfnet_postprocess")
    assert {parse(tmp_path / "repo", m).max_batch_size for m in batched} == {1}
    assert list(parse(tmp_path / "repo", "cfnet_preprocess").output[0].dims) == [3, 32, 40]  # padded to the size


def test_a_version_compatible_plan_carries_its_tensorrt_version_and_how_to_serve_it(
    tiny: Path, tmp_path: Path
) -> None:
    engine = tmp_path / "v.engine"
    engine.write_bytes(b"plan bytes")
    sidecar = {"metadata": tiny_metadata(), "tensorrt_version": "10.8.0.43", "compat": "version",
               "gpu_name": "NVIDIA A10", "compute_capability": [8, 6], "profile": {"max": [2, 3, 96, 128]}}
    engine.with_name("v.engine.json").write_text(json.dumps(sidecar))
    export_triton(engine, tmp_path / "repo")
    parameters = {k: v.string_value for k, v in parse(tmp_path / "repo", "cfnet_model").parameters.items()}
    assert {k: parameters[k] for k in ("tensorrt_version", "compat", "gpu_name", "compute_capability")} == {
        "tensorrt_version": "10.8.0.43", "compat": "version", "gpu_name": "NVIDIA A10", "compute_capability": "8.6"
    }
    readme = (tmp_path / "repo" / "cfnet_model" / "README.md").read_text()
    assert "TensorRT 10.8.0.43" in readme and "--backend-config=tensorrt,version-compatible=true" in readme


def test_the_tensorrt_accelerator_caches_each_model_and_content_apart(tiny: Path, tmp_path: Path) -> None:
    """Issue 22 item 4: every ORT model pointed at one `/tmp/cfnet-trt-cache`, and ONNX Runtime names cached
    engines by file name (always `model.onnx`) and graph, not weights: models loaded each other's engines."""

    def cache(model: Path, repo: str, name: str = "cfnet") -> str:
        export_triton(model, tmp_path / repo, name=name, gpu=True)
        accelerator = parse(tmp_path / repo, f"{name}_model").optimization.execution_accelerators
        return accelerator.gpu_execution_accelerator[0].parameters["trt_engine_cache_path"]

    retrained = tmp_path / "retrained.onnx"
    retrained.write_bytes(tiny.read_bytes().replace(b"tiny-conv", b"tiny-conX"))  # same graph, other bytes
    first, again, other, renamed = (cache(tiny, "a"), cache(tiny, "b"), cache(retrained, "c"),
                                    cache(tiny, "d", name="second"))  # fmt: skip
    assert first == again  # the same bytes under the same name share their engines
    assert len({first, other, renamed}) == 3
    assert all(Path(p).parent == Path("/tmp") for p in (first, other, renamed))  # one level: the EP creates it
