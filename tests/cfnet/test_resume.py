"""`--resume` is exact: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one.

The model is the fused `cfnet-pspnet` (its InfoNCE draws random pixel positions, so the RNG state must be
restored too); the interrupted run is killed mid-epoch and uses a DataLoader worker, the reference none:
a sample's augmentation depends on (seed, epoch, index) only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cfnet.checkpoint import load_checkpoint, save_checkpoint
from cfnet.data.synth import synthesize
from cfnet.models import build_model
from cfnet.train.config import TrainConfig, resumed_config
from cfnet.train.curves import read_metrics

ITERS = 8


def _train(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = [
        "train",
        "--model",
        "cfnet-pspnet",
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--out",
        str(out),
        "--iters",
        str(ITERS),
        "--crop",
        "64x64",
        "--lr",
        "1e-3",
        "--save-every",
        "3",
        "--val-every",
        "4",
        "--log-every",
        "1",
        "--device",
        "cpu",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cfnet", *args], env=env, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err


def test_killed_and_resumed_run_is_bit_identical(tmp_path: Path) -> None:
    data = synthesize(tmp_path / "synth", train=4, val=2, size=(64, 128), seed=0, workers=1)
    reference = _train(data, tmp_path / "reference", "--workers", "0")
    killed = _train(data, tmp_path / "killed", "--workers", "1")
    marker = tmp_path / "killed" / "iter_000003.pt"
    deadline = time.monotonic() + 300
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    interrupted_at = load_checkpoint(tmp_path / "killed" / "last.pt")["iteration"]
    assert 3 <= interrupted_at < ITERS
    resumed = _train(data, tmp_path / "killed", "--resume", "--workers", "1")
    _finish(resumed)
    _finish(reference)

    ours = load_checkpoint(tmp_path / "killed" / "last.pt")
    theirs = load_checkpoint(tmp_path / "reference" / "last.pt")
    assert ours["iteration"] == theirs["iteration"] == ITERS
    assert ours["model"].keys() == theirs["model"].keys()
    for key, value in theirs["model"].items():
        assert torch.equal(ours["model"][key], value), key
    for index, state in theirs["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ours["optimizer"]["state"][index][name], state[name]), (index, name)
    assert torch.equal(ours["rng"][0]["torch"], theirs["rng"][0]["torch"])
    # metrics.csv holds each iteration once, and the same losses as the uninterrupted run
    ours_rows = [r for r in read_metrics(tmp_path / "killed" / "metrics.csv") if "loss" in r]
    theirs_rows = [r for r in read_metrics(tmp_path / "reference" / "metrics.csv") if "loss" in r]
    assert [r["iteration"] for r in ours_rows] == list(range(1, ITERS + 1))
    assert [r["loss"] for r in ours_rows] == pytest.approx([r["loss"] for r in theirs_rows], rel=1e-5)


def test_resumed_config_takes_only_the_allowed_overrides(tmp_path: Path) -> None:
    saved = TrainConfig(model="unet", data="/data/a", out=str(tmp_path), preset="tiny", epochs=3, lr=0.5, workers=2)
    model = build_model("unet", preset="tiny")
    save_checkpoint(tmp_path / "last.pt", model=model, iteration=5, config={**saved.to_dict(), **model.config})
    config = resumed_config(tmp_path, {"iters": 40, "workers": 0, "lr": 9.0, "data": "/data/b"})
    assert (config.iters, config.epochs, config.workers, config.data) == (40, None, 0, "/data/b")
    assert (config.lr, config.preset, config.crop) == (0.5, "tiny", (512, 512))  # not overridable: from the run
    assert resumed_config(tmp_path, {"epochs": 9}).epochs == 9
