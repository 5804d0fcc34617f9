"""`export_onnx`: every zoo model with dynamic shapes against PyTorch, metadata, refusals, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from cfnet.data.labels import MEAN, PALETTE, STD, TRAIN_CLASSES
from cfnet.models import MODEL_NAMES, SegmentationModel
from export.onnx import ParityError, export_onnx, write_atomic
from export.parity import compare
from tests.export.helpers import EXPORT_SIZE, logits_dims

ROOT = Path(__file__).resolve().parents[2]
OTHER_SIZES = ((96, 160), (72, 100))  # neither is the export size; 72x100 is not a multiple of 32


def _padded(size: tuple[int, int], divisor: int) -> tuple[int, int]:
    return -(-size[0] // divisor) * divisor, -(-size[1] // divisor) * divisor


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_dynamic_export_agrees_with_pytorch_at_other_sizes(
    name: str, exported: dict[str, tuple[SegmentationModel, Path]]
) -> None:
    model, path = exported[name]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    pairs = []
    for batch, size in zip((2, 1), OTHER_SIZES, strict=True):
        shape = _padded(size, model.size_divisor)
        assert shape != EXPORT_SIZE
        x = rng.standard_normal((batch, 3, *shape), dtype=np.float32)
        with torch.no_grad():
            reference = model(torch.from_numpy(x)).numpy()
        logits = session.run(["logits"], {"images": x})[0]
        assert logits.shape == (batch, 19, *shape)
        pairs.append((reference, logits))
    parity = compare(pairs)
    assert parity.agreement >= 0.9999, parity.line()
    assert parity.relative_error <= 1e-4, parity.line()


def test_metadata_is_what_the_runtime_reads(exported: dict[str, tuple[SegmentationModel, Path]]) -> None:
    from runtime.backends import read_metadata

    model, path = exported["unet"]
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert props["cfnet.model"] == "unet" and props["cfnet.preset"] == "tiny"
    assert json.loads(props["cfnet.classes"]) == list(TRAIN_CLASSES)
    assert json.loads(props["cfnet.palette"]) == [list(c) for c in PALETTE]
    assert json.loads(props["cfnet.mean"]) == list(MEAN) and json.loads(props["cfnet.std"]) == list(STD)
    assert props["cfnet.input_size"] == "64x128"
    assert props["cfnet.size_divisor"] == str(model.size_divisor)
    assert props["cfnet.precision"] == "fp32"
    assert props["cfnet.version"]
    meta = read_metadata(path)
    assert meta.input_size == EXPORT_SIZE and meta.num_classes == 19 and meta.size_divisor == model.size_divisor


def test_every_export_declares_a_fixed_class_dimension(exported: dict[str, tuple[SegmentationModel, Path]]) -> None:
    """README: the output is `N x 19 x H x W` (the exporter left the class dimension a symbol after a Resize)."""
    for name, (_, path) in exported.items():
        assert logits_dims(path) == ["batch", 19, "height", "width"], name


def test_static_export_fixes_the_shape(tmp_path: Path) -> None:
    from tests.export.helpers import tiny_model

    path = export_onnx(tiny_model("pspnet"), tmp_path / "static.onnx", size=(64, 96), dynamic=False, batch=2)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 64, 96]
    assert logits_dims(path) == [2, 19, 64, 96]


def test_tracing_leaves_no_temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export killed while tracing (SIGKILL runs no cleanup) left an empty `cfnet-trace-*` folder: none exists."""
    import tempfile

    from tests.export.helpers import tiny_model

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen: list[list[str]] = []
    real_export = torch.onnx.export

    def spying_export(*args: object, **kwargs: object) -> object:
        seen.append(sorted(p.name for p in scratch.iterdir()))
        return real_export(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.onnx, "export", spying_export)
    export_onnx(tiny_model("unet"), tmp_path / "unet.onnx", size=(32, 32), simplify=False)
    assert seen == [[]]
    assert list(scratch.iterdir()) == []


class _Drifting(SegmentationModel):
    """Adds how often it was called: the traced graph freezes the count, so ONNX and PyTorch disagree."""

    size_divisor = 1

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 19, 1)
        self.calls = 0
        self.config = {"model": "drifting", "preset": "test", "num_classes": 19}

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.head(x) * self.calls


def test_parity_failure_refuses_the_export_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "drift.onnx"
    with pytest.raises(ParityError, match="disagrees with PyTorch"):
        export_onnx(_Drifting(), out, size=(32, 32))
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_through_the_cli_exits_1_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cfnet.cli import main

    monkeypatch.setattr("cfnet.models.build_model", lambda *args, **kwargs: _Drifting())
    out = tmp_path / "drift.onnx"
    with pytest.raises(SystemExit) as info:
        main(["export", "onnx", "--model", "pspnet", "--out", str(out), "--size", "32x32"])
    assert info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: fp32 export disagrees with PyTorch") and last.endswith(f"({out} not written)")
    assert list(tmp_path.iterdir()) == []


def test_simplified_graph_is_smaller_and_computes_the_same(
    exported: dict[str, tuple[SegmentationModel, Path]], tmp_path: Path
) -> None:
    model, slim = exported["cfnet-hrnet"]
    raw = export_onnx(model, tmp_path / "raw.onnx", size=EXPORT_SIZE, simplify=False)
    nodes = {path: len(onnx.load(str(path)).graph.node) for path in (slim, raw)}
    assert nodes[slim] < 0.8 * nodes[raw], nodes
    x = np.random.default_rng(2).standard_normal((1, 3, 96, 160), dtype=np.float32)
    slim_out, raw_out = (
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], {"images": x})[0]
        for path in (slim, raw)
    )
    np.testing.assert_allclose(slim_out, raw_out, rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_paper_presets_export_and_pass_the_parity_gate(name: str, tmp_path: Path) -> None:
    from cfnet.models import build_model

    torch.manual_seed(0)
    model = build_model(name, preset="paper").eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", size=(64, 64), simplify=False)  # gated: raises if off
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert meta["cfnet.model"] == name and meta["cfnet.preset"] == "paper"
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    class Exploding:
        def SerializeToString(self) -> bytes:  # noqa: N802 - protobuf's name
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(Exploding(), tmp_path / "model.onnx")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_sigkill_during_export_leaves_nothing_at_out(tmp_path: Path) -> None:
    out = tmp_path / "killed.onnx"
    command = [sys.executable, "-m", "cfnet", "export", "onnx", "--model", "pspnet", "--preset", "tiny"]
    command += ["--out", str(out), "--size", "64x64", "--precision", "fp16"]
    proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # killed after the fp32 graph exists, while the fp16 one is being made
        if line.startswith("parity fp32"):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()


def test_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    from cfnet.errors import UserError
    from tests.export.helpers import tiny_model

    model = tiny_model("unet")
    with pytest.raises(UserError, match="multiple of the model's size divisor 16"):
        export_onnx(model, tmp_path / "a.onnx", size=(60, 128))
    with pytest.raises(UserError, match="calibration"):
        export_onnx(model, tmp_path / "b.onnx", size=(64, 128), precision="int8")
    with pytest.raises(UserError, match="opset"):
        export_onnx(model, tmp_path / "c.onnx", size=(64, 128), opset=13)
    assert list(tmp_path.iterdir()) == []
