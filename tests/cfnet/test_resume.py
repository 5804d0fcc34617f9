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
from cfnet.cli import main
from cfnet.data.synth import synthesize
from cfnet.models import build_model
from cfnet.train import loop
from cfnet.train.config import TrainConfig, resumed_config
from cfnet.train.curves import read_metrics
from cfnet.train.loop import _Run

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
        "4",  # the kill (after iteration 3 or 6) falls inside a row's window
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
    marker = tmp_path / "killed" / "last.pt"  # written last of a step's files
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
    # metrics.csv holds each row once, averaging the same iterations' losses as the uninterrupted run
    ours_rows = [_without_clock(r) for r in read_metrics(tmp_path / "killed" / "metrics.csv")]
    theirs_rows = [_without_clock(r) for r in read_metrics(tmp_path / "reference" / "metrics.csv")]
    assert [r["iteration"] for r in ours_rows if "loss" in r] == [4, 8]
    assert ours_rows == theirs_rows


def _without_clock(row: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k != "seconds"}


def test_a_run_killed_between_its_checkpoint_files_resumes_to_a_consistent_best_and_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The process dies right after the first file of the step that writes both best.pt and last.pt (iteration 4);
    the replay of that step scores lower (a resume that is not bit-identical), so only best.pt holds the best."""
    data = synthesize(tmp_path / "synth", train=2, val=1, size=(64, 128), seed=0, workers=1)
    run = tmp_path / "run"
    scores = iter([0.1, 0.3, 0.05, 0.08])  # validations at 2, 4 (killed), 4 again, 6
    monkeypatch.setattr(_Run, "_validate", lambda self: {"miou": next(scores), "mdice": 0.0, "pixel_accuracy": 0.0})
    written: list[tuple[str, int]] = []

    def save_then_die(path: Path, **fields: object) -> Path:
        save_checkpoint(path, **fields)  # type: ignore[arg-type]
        written.append((Path(path).name, int(fields["iteration"])))  # type: ignore[call-overload]
        if written[-1][1] == 4 and len(written) == 4:  # the first file written at iteration 4
            raise KeyboardInterrupt  # stands for SIGKILL between two files: nothing after it runs
        return Path(path)

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    args = ["--out", str(run), "--iters", "6", "--val-every", "2", "--save-every", "2", "--workers", "0"]
    tiny = ["--model", "unet", "--preset", "tiny", "--data", str(data), "--crop", "64x64", "--device", "cpu"]
    codes = []
    for extra in (tiny, ["--resume"]):
        with pytest.raises(SystemExit) as info:
            main(["train", *args, *extra])
        codes.append(info.value.code)
    assert codes == [130, 0], capsys.readouterr().err
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    assert last["iteration"] == 6
    assert last["metrics"]["best_miou"] == best["metrics"]["val_miou"] == 0.3


def test_resumed_config_takes_only_the_allowed_overrides(tmp_path: Path) -> None:
    saved = TrainConfig(model="unet", data="/data/a", out=str(tmp_path), preset="tiny", epochs=3, lr=0.5, workers=2)
    model = build_model("unet", preset="tiny")
    save_checkpoint(tmp_path / "last.pt", model=model, iteration=5, config={**saved.to_dict(), **model.config})
    config = resumed_config(tmp_path, {"iters": 40, "workers": 0, "lr": 9.0, "data": "/data/b"})
    assert (config.iters, config.epochs, config.workers, config.data) == (40, None, 0, "/data/b")
    assert (config.lr, config.preset, config.crop) == (0.5, "tiny", (512, 512))  # not overridable: from the run
    assert resumed_config(tmp_path, {"epochs": 9}).epochs == 9
