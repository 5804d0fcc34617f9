"""Atomic outputs: the old file stays whole until the new one is complete; a failure leaves no trace."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cfnet.atomic import atomic_path, umask, write_bytes


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_finished_write_replaces_and_keeps_the_suffix(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "video.mp4"
    with atomic_path(out) as tmp:
        assert tmp.suffix == ".mp4" and tmp.parent == out.parent and not out.exists()
        tmp.write_bytes(b"new")
    assert write_bytes(tmp_path / "x.bin", b"abc").read_bytes() == b"abc"
    assert out.read_bytes() == b"new"
    assert sorted(p.name for p in out.parent.iterdir()) == ["video.mp4"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask()  # an ordinary file, not mkstemp's private one
