"""`cfnet.reference` in the model metadata: parsed and checked, optional (older files keep working)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.artifact import Overrides, metadata_from_props
from runtime.errors import UserError
from runtime.results.reference import BINS, Reference
from tests.runtime.helpers import CLASSES, tiny_metadata


def _reference_json() -> str:
    hist = np.full(BINS, 1 / BINS)
    return Reference(np.array([0.4, 0.3, 0.2, 0.1]), hist, images=3, pixels=300).to_json()


def test_a_reference_is_read_from_onnx_strings_and_decoded_sidecars() -> None:
    meta = metadata_from_props({**tiny_metadata(), "cfnet.reference": _reference_json()}, "model.onnx")
    assert meta.reference is not None and np.allclose(meta.reference.shares, [0.4, 0.3, 0.2, 0.1])
    decoded = metadata_from_props({**tiny_metadata(), "cfnet.reference": json.loads(_reference_json())}, "x.engine")
    assert decoded.reference is not None and decoded.reference.images == 3
    assert meta == decoded  # the reference does not take part in equality


def test_files_without_a_reference_keep_working() -> None:
    assert metadata_from_props(tiny_metadata(), "old.onnx").reference is None


def test_a_malformed_reference_is_refused_naming_it() -> None:
    bad = json.loads(_reference_json())
    bad["shares"] = [0.5, 0.5]
    with pytest.raises(UserError, match="malformed cfnet metadata: cfnet.reference has 2 class shares for 4"):
        metadata_from_props({**tiny_metadata(), "cfnet.reference": json.dumps(bad)}, "model.onnx")


def test_overriding_the_class_count_drops_the_reference() -> None:
    props = {**tiny_metadata(), "cfnet.reference": _reference_json()}
    assert metadata_from_props(props, "m", Overrides(classes=tuple(c.upper() for c in CLASSES))).reference is not None
    assert metadata_from_props(props, "m", Overrides(classes=("a", "b"))).reference is None
