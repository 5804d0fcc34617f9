"""Model metadata from ONNX files and engine sidecars; overrides for models without cfnet metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.artifact import Overrides, parse_classes, parse_size, parse_triple
from runtime.backends import read_metadata
from runtime.errors import UserError
from tests.runtime.helpers import CLASSES, MEAN, PALETTE, STD, tiny_metadata


def test_onnx_metadata_is_read_as_written(tiny_onnx: Path) -> None:
    meta = read_metadata(tiny_onnx)
    assert meta.classes == tuple(CLASSES)
    assert [list(c) for c in meta.palette] == PALETTE
    assert list(meta.mean) == MEAN and list(meta.std) == STD
    assert meta.input_size == (48, 64) and meta.size_divisor == 8
    assert (meta.model, meta.precision, meta.num_classes) == ("tiny-conv", "fp32", len(CLASSES))


def test_onnx_without_metadata_is_refused_with_the_options_to_pass(bare_onnx: Path) -> None:
    with pytest.raises(UserError, match="no cfnet metadata.*--classes"):
        read_metadata(bare_onnx)


def test_overrides_stand_in_for_missing_metadata(bare_onnx: Path) -> None:
    with pytest.raises(UserError, match="--input-size"):  # dynamic H and W: the size must be given
        read_metadata(bare_onnx, Overrides(classes=("a", "b", "c", "d")))
    meta = read_metadata(bare_onnx, Overrides(classes=("a", "b", "c", "d"), input_size=(32, 32), mean=(0.5, 0.5, 0.5)))
    assert meta.classes == ("a", "b", "c", "d") and meta.input_size == (32, 32) and meta.mean == (0.5, 0.5, 0.5)
    assert len(set(meta.palette)) == 4  # generated, distinct colours


def test_overrides_replace_fields_of_existing_metadata(tiny_onnx: Path) -> None:
    meta = read_metadata(tiny_onnx, Overrides(input_size=(96, 128), std=(1.0, 1.0, 1.0)))
    assert meta.input_size == (96, 128) and meta.std == (1.0, 1.0, 1.0)
    assert meta.classes == tuple(CLASSES)


def _engine_with_sidecar(tmp_path: Path, sidecar: object) -> Path:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "model.engine.json").write_text(json.dumps(sidecar))
    return engine


def test_engine_sidecar_with_string_or_decoded_values(tmp_path: Path) -> None:
    as_strings = _engine_with_sidecar(tmp_path, {**tiny_metadata(), "tensorrt_version": "10.13.0"})
    decoded = {
        k: json.loads(v) if k.endswith(("classes", "palette", "mean", "std")) else v for k, v in tiny_metadata().items()
    }
    other = tmp_path / "other"
    other.mkdir()
    nested = _engine_with_sidecar(other, {"metadata": decoded, "gpu_name": "X"})
    assert read_metadata(as_strings) == read_metadata(nested)
    assert read_metadata(as_strings).classes == tuple(CLASSES)


def test_engine_without_or_with_a_broken_sidecar(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(UserError, match="sidecar not found"):
        read_metadata(engine)
    (tmp_path / "model.engine.json").write_text("{not json")
    with pytest.raises(UserError, match="malformed engine sidecar"):
        read_metadata(engine)


def test_malformed_metadata_values_are_refused(tmp_path: Path) -> None:
    engine = _engine_with_sidecar(tmp_path, {**tiny_metadata(), "cfnet.std": "[0.2, 0.0, 0.2]"})
    with pytest.raises(UserError, match="std"):
        read_metadata(engine)
    engine = _engine_with_sidecar(tmp_path, {**tiny_metadata(), "cfnet.input_size": "48by64"})
    with pytest.raises(UserError, match="malformed cfnet metadata"):
        read_metadata(engine)


def test_option_parsers(tmp_path: Path) -> None:
    assert parse_classes("3") == ("class0", "class1", "class2")
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["road", "sky"]))
    assert parse_classes(str(names)) == ("road", "sky")
    assert parse_classes('["road", "sky"]') == ("road", "sky")  # inline, as the help says
    assert parse_size("512x1024") == (512, 1024)
    assert parse_triple("0.1,0.2,0.3") == (0.1, 0.2, 0.3)
    for bad, parse in (("0", parse_classes), ("512", parse_size), ("0x4", parse_size), ("1,2", parse_triple)):
        with pytest.raises(ValueError):
            parse(bad)
