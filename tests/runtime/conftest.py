"""Fixtures of the runtime tests (the helpers they use live in tests/runtime/helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime.helpers import export_tiny, tiny_metadata, write_video_file


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Input size 48x64 with divisor 8: frames of 48x64 go through unresized and unpadded."""
    return export_tiny(tmp_path_factory.mktemp("models") / "tiny.onnx", tiny_metadata())



@pytest.fixture(scope="session")
def bare_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same net without cfnet metadata."""
    return export_tiny(tmp_path_factory.mktemp("models") / "bare.onnx", None)



@pytest.fixture
def write_video() -> Callable[..., Path]:
    """`write_video(path, frames, fps=10, color=True)` -> path (`write_video_file` as a fixture)."""
    return write_video_file

