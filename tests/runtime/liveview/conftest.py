"""Fixtures of the live-view tests: a started view on loopback and a real run it observes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.liveview import LiveView
from tests.runtime.helpers import CLASSES, PALETTE
from tests.runtime.liveview.helpers import Run


@pytest.fixture
def view() -> Iterator[LiveView]:
    with LiveView(("127.0.0.1", 0), CLASSES, PALETTE, max_fps=50) as v:
        yield v


@pytest.fixture
def run(tiny_onnx: Path, view: LiveView) -> Iterator[Run]:
    r = Run(tiny_onnx, view)
    yield r
    r.finish()
