"""Export scratch folders: removed on exit, and those of killed exports (SIGKILL runs no cleanup) swept later."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from export.scratch import scratch_dir


def test_a_killed_exports_folder_is_swept_and_a_running_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"cfnet-int8-{int(dead.stdout)}-abc123"
    (stale / "fp32.onnx").parent.mkdir()
    (stale / "fp32.onnx").write_bytes(b"half a model")
    alive = tmp_path / f"cfnet-engine-{os.getppid()}-def456"
    alive.mkdir()
    other = tmp_path / "someone-else-123-x"
    other.mkdir()
    server = tmp_path / f"cfnet-triton-{int(dead.stdout)}-ghi789"  # its server may run on: leftovers.sweep's
    server.mkdir()
    with scratch_dir("int8") as folder:
        assert folder.parent == tmp_path and folder.name.startswith(f"cfnet-int8-{os.getpid()}-")
        assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, server.name])
