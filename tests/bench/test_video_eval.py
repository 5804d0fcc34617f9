"""`cfnet evaluate --video`: flicker and mIoU of a deployed model over a labelled video, smoothed and not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cfnet.cli import main
from cfnet.data.synth import synthesize_video
from export.onnx import export_onnx

SIZE = (64, 128)


def _colour_model() -> torch.nn.Module:
    """19 classes by colour (random 3x3 convolutions): masks that change from frame to frame, as an untrained
    zoo model's (one class everywhere) do not."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 19, 1)).eval()


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("drive")
    video = synthesize_video(folder / "drive.mp4", frames=8, size=SIZE, labels=folder / "labels")
    return video, folder / "labels"


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ended:
        main(args)
    out, err = capsys.readouterr()
    return int(ended.value.code or 0), out, err


def test_scores_with_and_without_smoothing(
    drive: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = export_onnx(_colour_model(), tmp_path / "m.onnx", size=SIZE)  # type: ignore[arg-type]
    video, labels = drive
    code, out, _ = _run(["evaluate", "--video", str(video), "--labels", str(labels), "--model", str(model),
                         "--device", "cpu", "--smooth", "vote:1", "--smooth", "ema:1", "--smooth", "vote:3",
                         "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["frames"] == 8 and list(report["results"]) == ["none", "vote:1", "ema:1", "vote:3"]
    none = report["results"]["none"]
    assert 0 <= none["miou"] <= 1 and 0 <= none["flicker"] <= 1 and none["frames"] == 8
    for identity in ("vote:1", "ema:1"):  # no smoothing at all: the same masks
        same = report["results"][identity]
        assert same["miou"] == pytest.approx(none["miou"], abs=1e-9)
        assert same["flicker"] == pytest.approx(none["flicker"], abs=1e-9)
        assert same["miou_change"] == pytest.approx(0, abs=1e-7)
    vote = report["results"]["vote:3"]
    assert none["flicker"] > 0.01 and vote["flicker"] < none["flicker"]
    assert vote["flicker_ratio"] == pytest.approx(vote["flicker"] / none["flicker"])
    code, out, _ = _run(["evaluate", "--video", str(video), "--labels", str(labels), "--model", str(model),
                         "--device", "cpu", "--smooth", "vote:3"], capsys)
    assert code == 0 and "vote:3" in out and "flicker" in out


def test_bad_input_is_one_line(drive: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video, labels = drive
    masks = export_onnx(_colour_model(), tmp_path / "mask.onnx", size=SIZE, output="mask")  # type: ignore[arg-type]
    capsys.readouterr()  # the export's parity lines
    cases = [
        (["--labels", str(labels), "--model", str(masks), "--smooth", "ema:2"], "ema:A takes a weight A in (0, 1]"),
        (["--labels", str(labels), "--model", str(masks), "--smooth", "vote:0"], "vote:K takes a whole number"),
        (["--labels", str(labels), "--model", str(masks), "--smooth", "ema:0.5"], "this model outputs masks"),
        (["--labels", str(tmp_path), "--model", str(masks)], "no *_gtFine_labelIds.png files"),
        (["--model", str(masks)], "--video needs --labels DIR and --model MODEL"),
    ]
    for args, message in cases:
        code, _, err = _run(["evaluate", "--video", str(video), "--device", "cpu", *args], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = _run(["evaluate", "--checkpoint", "x.pt", "--data", str(tmp_path), "--smooth", "vote:3"], capsys)
    assert code == 2 and "go with --video" in err
