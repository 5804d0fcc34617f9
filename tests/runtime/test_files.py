"""The runtime's atomic writes: ordinary file permissions, nothing left behind on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import UserError
from runtime.files import write_bytes, write_image


def test_outputs_get_ordinary_permissions(tmp_path: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    out = write_bytes(tmp_path / "mask.png", b"data")
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask  # not mkstemp's private 0600


def test_a_failed_encode_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        write_image(tmp_path / "mask.unknown-format", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []
