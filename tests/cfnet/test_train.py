"""`cfnet train` end to end on a tiny synthetic set: files of a run, NaN stop, bad input, the --nproc launcher."""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import cfnet.losses
from cfnet.checkpoint import load_checkpoint, load_model
from cfnet.cli import main
from cfnet.data.cityscapes import CityscapesDataset
from cfnet.data.synth import synthesize
from cfnet.data.transforms import EvalTransform
from cfnet.evaluate import evaluate
from cfnet.train.config import AUX_WEIGHT
from cfnet.train.curves import read_metrics

TINY = ["--preset", "tiny", "--crop", "64x64", "--workers", "0", "--device", "cpu", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("train") / "synth", train=4, val=2, size=(64, 128), seed=0, workers=1)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_run_writes_checkpoints_metrics_and_curves(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    code, out, err = _cli(
        capsys,
        "train",
        "--model",
        "cfnet-pspnet",
        "--data",
        str(data),
        "--out",
        str(run),
        "--iters",
        "6",
        "--val-every",
        "3",
        "--save-every",
        "3",
        "--log-every",
        "1",
        "--poly",
        "--amp",
        *TINY,
    )
    assert code == 0, err
    assert "warning: --amp needs CUDA: training in fp32 on the CPU" in err  # AMP is ignored on the CPU, with a warning
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt",
        "curves.png",
        "iter_000003.pt",
        "iter_000006.pt",
        "last.pt",
        "metrics.csv",
    ]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_metrics(run / "metrics.csv")
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_miou" in r]
    assert [r["iteration"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert [r["iteration"] for r in val_rows] == [3, 6]
    assert all("loss_contrastive" in r and r["loss_contrastive"] > 0 for r in train_rows)  # the fused model's InfoNCE
    assert train_rows[0]["lr"] == pytest.approx(1e-3) and train_rows[-1]["lr"] < train_rows[1]["lr"]  # poly decay
    for r in train_rows:
        parts = r["loss_ce"] + r["loss_dice"] + 0.1 * r["loss_contrastive"] + AUX_WEIGHT * r["loss_aux"]
        assert r["loss"] == pytest.approx(parts, rel=1e-4)

    last = load_checkpoint(run / "last.pt")
    assert last["iteration"] == 6 and last["config"]["model"] == "cfnet-pspnet" and last["config"]["crop"] == [64, 64]
    best = load_checkpoint(run / "best.pt")
    best_row = max(val_rows, key=lambda r: r["val_miou"])
    assert best["iteration"] == best_row["iteration"]
    assert best["metrics"]["best_miou"] == pytest.approx(best_row["val_miou"], abs=1e-6)
    assert out.strip() == f"checkpoint: {run / 'best.pt'}"
    # the checkpoint holds the weights that were scored: re-evaluating it gives the logged mIoU
    val = CityscapesDataset(data, "val", transform=EvalTransform())
    rescored = evaluate(load_model(run / "best.pt", expect_model="cfnet-pspnet"), val)
    assert rescored["miou"] == pytest.approx(best_row["val_miou"], abs=1e-6)


class _NanAfter(cfnet.losses.SegmentationLoss):
    calls = 0

    def forward(self, outputs, target):  # noqa: ANN001, ANN201 - the loss's own signature
        loss, parts = super().forward(outputs, target)
        type(self).calls += 1
        return (loss * math.nan if type(self).calls == 5 else loss), parts


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cfnet.losses, "SegmentationLoss", _NanAfter)
    run = tmp_path / "run"
    code, _, err = _cli(
        capsys,
        "train",
        "--model",
        "unet",
        "--data",
        str(data),
        "--out",
        str(run),
        "--iters",
        "8",
        "--save-every",
        "2",
        "--val-every",
        "100",
        *TINY,
    )
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    where = f"last good checkpoint: {run / 'last.pt'}; try a lower --lr"
    assert lines == [f"error: loss became nan at iteration 5 ({where})"]
    last = load_checkpoint(run / "last.pt")
    assert last["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (run / "iter_000006.pt").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "unet", "--data", "{missing}", "--iters", "1"], "error: data folder not found ({missing})"),
        (["--model", "nope", "--data", "{data}", "--iters", "1"], "error: unknown model 'nope'"),
        (["--model", "unet", "--data", "{data}"], "error: give the length of the run (--iters I or --epochs E)"),
        (["--data", "{data}", "--iters", "1"], "error: --model and --data are required (unless --resume)"),
        (["--resume"], "error: checkpoint not found ({out}/last.pt)"),
        (["--model", "unet", "--data", "{data}", "--iters", "1", "--crop", "64"], "error: Invalid value for '--crop'"),
    ],
    ids=["missing-data", "unknown-model", "no-length", "no-model", "resume-without-run", "bad-crop"],
)
def test_bad_input_is_one_line_and_exit_2(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    out = tmp_path / "run"
    fill = {"missing": str(tmp_path / "missing"), "data": str(data), "out": str(out)}
    code, _, err = _cli(capsys, "train", "--out", str(out), *[a.format(**fill) for a in args], "--workers", "0")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(message.format(**fill)), err


def test_metrics_seconds_continue_across_a_resume(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    args = ["--model", "unet", "--data", str(data), "--out", str(run), "--iters", "1", "--log-every", "1", *TINY]
    assert _cli(capsys, "train", *args)[0] == 0
    before = read_metrics(run / "metrics.csv")
    saved = load_checkpoint(run / "last.pt")["metrics"]["seconds"]  # the run's clock when last.pt was written
    assert _cli(capsys, "train", "--out", str(run), "--resume", "--iters", "2", "--workers", "0")[0] == 0
    rows = read_metrics(run / "metrics.csv")
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2]
    seconds = [r["seconds"] for r in rows]
    assert seconds[: len(before)] == [r["seconds"] for r in before]
    assert seconds == sorted(seconds) and before[-1]["seconds"] <= saved < seconds[len(before)]


def test_only_the_newest_numbered_checkpoints_are_kept(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    args = ["--model", "unet", "--data", str(data), "--out", str(run), "--iters", "5", "--save-every", "1", *TINY]
    assert _cli(capsys, "train", *args, "--val-every", "5")[0] == 0
    numbered = sorted(p.name for p in run.glob("iter_*.pt"))
    assert numbered == ["iter_000003.pt", "iter_000004.pt", "iter_000005.pt"]  # --keep-checkpoints 3 by default
    assert (run / "best.pt").exists() and (run / "last.pt").exists()
    code, _, err = _cli(capsys, "train", "--out", str(run), "--resume", "--iters", "7", "--keep-checkpoints", "0")
    assert code == 0, err
    assert sorted(p.name for p in run.glob("iter_*.pt")) == [*numbered, "iter_000006.pt", "iter_000007.pt"]  # 0: all


def test_refuses_to_overwrite_a_run(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    args = ["train", "--model", "unet", "--data", str(data), "--out", str(run), "--iters", "1", *TINY]
    assert _cli(capsys, *args)[0] == 0
    before = (run / "last.pt").read_bytes()
    code, _, err = _cli(capsys, *args)
    assert code == 2 and err.startswith("error: the run folder already holds a run")
    assert (run / "last.pt").read_bytes() == before


def test_two_process_launcher_trains_and_rank_0_writes(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "ddp"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / f".last.{dead.pid}.tq8x2.part.pt").write_bytes(b"left by a killed run")  # the launcher sweeps it
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("torchelastic_*")) | set(temp.glob("cfnet-elastic-*"))
    code, out, err = _cli(
        capsys,
        "train",
        "--model",
        "unet",
        "--data",
        str(data),
        "--out",
        str(run),
        "--iters",
        "2",
        "--nproc",
        "2",
        "--save-every",
        "1",
        "--val-every",
        "2",
        *TINY,
    )
    assert code == 0, err
    assert out.strip() == f"checkpoint: {run / 'best.pt'}"
    assert set(temp.glob("torchelastic_*")) | set(temp.glob("cfnet-elastic-*")) == before  # the launcher's logs went
    checkpoints = {p.name: load_checkpoint(p) for p in run.glob("*.pt")}
    assert sorted(checkpoints) == ["best.pt", "iter_000001.pt", "iter_000002.pt", "last.pt"]
    last = checkpoints["last.pt"]
    assert last["iteration"] == 2 and last["config"]["world_size"] == 2
    assert len(last["rng"]) == 2  # one RNG state per rank, for an exact resume
    assert not torch.equal(last["rng"][0]["torch"], last["rng"][1]["torch"])
    assert not any(".part" in p.name for p in run.iterdir())
    # validation is sharded over the ranks; the summed confusion matrix scores like one process on the split
    logged = read_metrics(run / "metrics.csv")[-1]["val_miou"]
    val = CityscapesDataset(data, "val", transform=EvalTransform())
    assert logged == pytest.approx(evaluate(load_model(run / "last.pt"), val)["miou"], abs=1e-6)
