"""Atomic outputs: the old file stays whole until the new one is complete; a failure leaves no trace."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cfnet.atomic import atomic_path, umask, write_bytes
from cfnet.data.synth import synthesize
from runtime.files import part_pid


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


def test_temp_names_carry_the_pid_in_the_pattern_the_runtime_sweep_reads(tmp_path: Path) -> None:
    """cfnet/atomic.py may not import runtime/files.py: this ties its names to the one sweep's pattern."""
    for name in ("best.pt", "run.5.onnx", "curves.png", "metrics.csv", "noext"):
        with atomic_path(tmp_path / name) as tmp:
            assert part_pid(tmp.name) == os.getpid(), tmp.name
            assert tmp.name.endswith(f".part{Path(name).suffix}")  # writers that pick a format by suffix see it
    assert part_pid(f".run.5.{os.getpid()}.t12345678.part.pt") == os.getpid()  # an all-digit random part too
    assert part_pid("best.pt") is None


def test_the_next_train_and_export_remove_the_temp_files_of_dead_processes_only(tmp_path: Path) -> None:
    data = synthesize(tmp_path / "synth", train=1, val=1, size=(64, 64), seed=0, workers=1)
    dead, alive = _dead_pid(), os.getpid()  # this test's own process runs throughout
    run, exported = tmp_path / "run", tmp_path / "exported"
    commands = {
        run: ["train", "--model", "unet", "--preset", "tiny", "--data", str(data), "--out", str(run), "--iters", "1",
              "--crop", "64x64", "--workers", "0", "--device", "cpu"],
        exported: ["export", "onnx", "--model", "unet", "--preset", "tiny", "--out", str(exported / "unet.onnx"),
                   "--size", "64x64"],
    }
    for folder, args in commands.items():
        folder.mkdir()
        left = folder / f".best.{dead}.tq8x2_ab1.part.pt"  # what a killed run leaves (cfnet/atomic.py's name)
        kept = folder / f".unet.{alive}.tz0y_9k3.part.onnx"
        left.write_bytes(b"half")
        kept.write_bytes(b"being written")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-m", "cfnet", *args], env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        assert not left.exists() and kept.exists(), args[0]
        assert [p.name for p in folder.iterdir() if ".part" in p.name] == [kept.name]


def _dead_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
