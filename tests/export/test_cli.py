"""`cfnet export onnx` and `cfnet build-engine`: results, and one-line errors with exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfnet.cli import main
from cfnet.models import SegmentationModel


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_export_from_a_checkpoint_with_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cfnet.checkpoint import save_checkpoint
    from tests.export.helpers import tiny_model

    model = tiny_model("hrnet")
    ckpt = save_checkpoint(tmp_path / "hrnet.pt", model=model, iteration=3, config=dict(model.config))
    out = tmp_path / "hrnet.onnx"
    code, stdout, err = _run(
        ["export", "onnx", "--checkpoint", str(ckpt), "--out", str(out), "--size", "64x64", "--json"], capsys
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["path"] == str(out) and out.is_file()
    assert report["metadata"]["cfnet.model"] == "hrnet" and report["metadata"]["cfnet.input_size"] == "64x64"
    assert report["parity"]["fp32 random"]["agreement"] >= 0.9999
    assert "parity fp32" in err


def test_checkpoint_of_another_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cfnet.checkpoint import save_checkpoint
    from tests.export.helpers import tiny_model

    model = tiny_model("unet")
    ckpt = save_checkpoint(tmp_path / "unet.pt", model=model, iteration=1, config=dict(model.config))
    out = tmp_path / "x.onnx"
    code, _, err = _run(["export", "onnx", "--checkpoint", str(ckpt), "--model", "pspnet", "--out", str(out)], capsys)
    assert code == 2
    assert "holds model 'unet', expected 'pspnet'" in _one_error_line(err)
    assert not out.exists()


def test_corrupt_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "broken.pt"
    ckpt.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    code, _, err = _run(["export", "onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x.onnx")], capsys)
    assert code == 2
    assert str(ckpt) in _one_error_line(err)


def test_build_engine_refuses_a_non_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_text("this is not a protobuf\n" * 20)
    code, _, err = _run(["build-engine", str(fake), "--out", str(tmp_path / "m.engine")], capsys)
    assert code == 2
    assert "not an ONNX model" in _one_error_line(err)


@pytest.mark.parametrize("shape", ["1x3x256", "1x3xabcx512", "1x3x256x512x2", "0x3x256x512"])
def test_build_engine_refuses_malformed_shapes(shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["build-engine", "m.onnx", "--out", str(tmp_path / "m.engine"), "--min-shape", shape], capsys)
    assert code == 2
    assert "malformed shape" in _one_error_line(err)


def test_build_engine_refuses_min_above_max(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: dict[str, tuple[SegmentationModel, Path]]
) -> None:
    _, onnx_path = exported["unet"]
    args = ["build-engine", str(onnx_path), "--out", str(tmp_path / "m.engine")]
    code, _, err = _run([*args, "--min-shape", "1x3x512x512", "--max-shape", "1x3x256x256"], capsys)
    assert code == 2
    assert "exceeds" in _one_error_line(err)
    assert not (tmp_path / "m.engine").exists()


def test_build_engine_without_tensorrt_says_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], exported: dict[str, tuple[SegmentationModel, Path]]
) -> None:
    _, onnx_path = exported["unet"]
    code, _, err = _run(["build-engine", str(onnx_path), "--out", str(tmp_path / "m.engine")], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert line.startswith("error: TensorRT is not available (") and "pip install" in line
    assert list(tmp_path.iterdir()) == []
