"""One output check for every writing command: never over an input (paths, symlinks, hard links), never two
outputs on one path, the extension the next command needs, a trailing `/` for a folder (issue 25 items 1, 3)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import fails_cleanly
from tests.runtime.helpers import cfnet, synthetic_frames, write_video_file


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint (also under an .onnx name), the runtime tests' tiny ONNX, a video, an image, a data set."""
    import cv2
    import numpy as np

    from cfnet.checkpoint import save_checkpoint
    from cfnet.data.synth import synthesize
    from cfnet.models import build_model
    from tests.runtime.helpers import export_tiny, tiny_metadata

    folder = tmp_path_factory.mktemp("originals")
    model = build_model("unet", preset="tiny")
    save_checkpoint(folder / "ck.pt", model=model, iteration=1, config=dict(model.config))
    shutil.copyfile(folder / "ck.pt", folder / "ck.onnx")
    export_tiny(folder / "tiny.onnx", tiny_metadata())
    write_video_file(folder / "s.mp4", synthetic_frames(3, (48, 64)))
    (folder / "seg").mkdir()
    cv2.imwrite(str(folder / "seg" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    shutil.copyfile(folder / "seg" / "a.png", folder / "seg" / "a_mask.png")
    synthesize(folder / "data", train=0, val=1, size=(32, 64), seed=0)
    return folder


@pytest.fixture
def work(originals: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the originals, with a symlink and a hard link to the checkpoint and the video; the cwd."""
    folder = tmp_path / "work"
    shutil.copytree(originals, folder)
    os.symlink("ck.onnx", folder / "ck-link.onnx")
    os.link(folder / "ck.onnx", folder / "ck-hard.onnx")
    os.symlink("s.mp4", folder / "s-link.mp4")
    os.link(folder / "s.mp4", folder / "s-hard.mp4")
    monkeypatch.chdir(folder)
    return folder


def _digest(folder: Path) -> dict[str, str]:
    """Every path under `folder` with the hash of its bytes (a folder: its name only)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


EXPORT = ["export", "onnx", "--size", "64x64"]
STREAM = ["stream", "s.mp4", "--model", "tiny.onnx"]
VAL = "data/leftImg8bit/val/renderdorf"  # the synthetic set's validation city
# case -> (arguments, a fragment of the one error line)
CASES = {
    "export --out the checkpoint (the issue's command)": ([*EXPORT, "--checkpoint", "ck.pt", "--out", "ck.pt"],
                                                           "--out must end in .onnx, not .pt"),
    "export --out the checkpoint": ([*EXPORT, "--checkpoint", "ck.onnx", "--out", "ck.onnx"], "overwrite the input"),
    "export --out ./the checkpoint": ([*EXPORT, "--checkpoint", "ck.onnx", "--out", "./ck.onnx"], "the input"),
    "export --out ../work/the checkpoint": ([*EXPORT, "--checkpoint", "ck.onnx", "--out", "../work/ck.onnx"],
                                            "the input"),
    "export --out a symlink to the checkpoint": ([*EXPORT, "--checkpoint", "ck.onnx", "--out", "ck-link.onnx"],
                                                 "the input"),
    "export --checkpoint a symlink, --out it": ([*EXPORT, "--checkpoint", "ck-link.onnx", "--out", "ck.onnx"],
                                                "the input"),
    "export --out a hard link to the checkpoint": ([*EXPORT, "--checkpoint", "ck.onnx", "--out", "ck-hard.onnx"],
                                                   "the input"),
    "export --out model.txt": ([*EXPORT, "--model", "unet", "--out", "model.txt"], "must end in .onnx, not .txt"),
    "export --out model": ([*EXPORT, "--model", "unet", "--out", "model"], "must end in .onnx: it has no extension"),
    "build-engine --out the ONNX": (["build-engine", "tiny.onnx", "--out", "tiny.onnx"], "must end in .engine"),
    "build-engine --out model.txt": (["build-engine", "tiny.onnx", "--out", "m.txt"], "must end in .engine or .plan"),
    "build-engine --timing-cache the ONNX": (["build-engine", "tiny.onnx", "--out", "m.engine", "--timing-cache",
                                              "tiny.onnx"], "overwrite the input"),
    "build-engine --timing-cache --out": (["build-engine", "tiny.onnx", "--out", "m.plan", "--timing-cache", "m.plan"],
                                          "--out and --timing-cache name the same path"),
    "build-engine --timing-cache the sidecar": (["build-engine", "tiny.onnx", "--out", "m.engine", "--timing-cache",
                                                 "m.engine.json"], "--out's sidecar and --timing-cache"),
    "export triton: the model inside a folder it replaces": (
        ["export", "triton", "repo/cfnet_model/1/model.onnx", "--out", "repo", "--overwrite"], "inside it"),
    "segment: an output is an input image": (["segment", "seg/a.png", "seg/a_mask.png", "--model", "tiny.onnx",
                                              "--out", "seg"], "overwrite the input seg/a_mask.png"),
    "evaluate --save-predictions over the images": (["evaluate", "--checkpoint", "ck.pt", "--data", "data",
                                                     "--save-predictions", VAL], "overwrite the input"),
    "stream --out same.mp4 --save-masks same.mp4": ([*STREAM, "--out", "same.mp4", "--save-masks", "same.mp4"],
                                                    "--out and --save-masks name the same path"),
    "stream --save-masks X --out X": ([*STREAM, "--save-masks", "X", "--out", "X"], "it has no extension"),
    "stream --out x.png": ([*STREAM, "--out", "x.png"], "--out must end in .mp4, .m4v or .mov, not .png"),
    "stream --out a symlink to the source": ([*STREAM, "--out", "s-link.mp4"], "overwrite the input s.mp4"),
    "stream --out a hard link to the source": ([*STREAM, "--out", "s-hard.mp4"], "overwrite the input s.mp4"),
    "stream --out the model": ([*STREAM, "--out", "./s.mp4"], "overwrite the input s.mp4"),
    "data synth --video v.avi": (["data", "synth", "out", "--video", "v.avi"], "--video must end in .mp4"),
    "data synth OUT --video OUT": (["data", "synth", "v.mp4", "--video", "v.mp4"], "OUT and --video name the same"),
    "bench --markdown report.txt": (["bench", "--out", "b", "--markdown", "report.txt"], "--markdown must end in .md"),
    "bench --out a file": (["bench", "--out", "s.mp4"], "output folder is a file"),
    "train --out a file": (["train", "--model", "unet", "--data", "data", "--out", "s.mp4"], "is a file"),
    "ablate --out a file": (["ablate", "--data", "data", "--out", "s.mp4"], "is a file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_output_over_an_input_or_another_output_is_refused_up_front(
    case: str, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if case.startswith("export triton"):
        (work / "repo" / "cfnet_model" / "1").mkdir(parents=True)
        shutil.copyfile(work / "tiny.onnx", work / "repo" / "cfnet_model" / "1" / "model.onnx")
    before = _digest(work)
    args, fragment = CASES[case]
    err = fails_cleanly(args, capsys)
    assert fragment in err
    assert _digest(work) == before


def test_stream_out_with_a_trailing_slash_is_a_folder(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--out newdir/` once wrote an MP4 file named `newdir`."""
    code, _, err = cfnet([*STREAM, "--out", "newdir/"], capsys)
    assert code == 0, err
    assert (work / "newdir").is_dir() and os.listdir(work / "newdir") == ["s.mp4"]


def test_a_file_output_with_a_trailing_slash_is_refused(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails_cleanly([*EXPORT, "--model", "unet", "--out", "m.onnx/"], capsys)
    assert "ends with '/'" in err and not (work / "m.onnx").exists()


def test_the_check_compares_files_not_names(tmp_path: Path) -> None:
    """The shared check itself: hard links and symlinks are the same file, a new path is none of the inputs."""
    from runtime.errors import UserError
    from runtime.files import Output, check_outputs

    (tmp_path / "in.bin").write_bytes(b"x")
    os.link(tmp_path / "in.bin", tmp_path / "hard.bin")
    os.symlink(tmp_path / "in.bin", tmp_path / "soft.bin")
    for name in ("in.bin", "hard.bin", "soft.bin"):
        with pytest.raises(UserError, match="overwrite the input"):
            check_outputs([Output(tmp_path / name)], [tmp_path / "in.bin"])
    assert check_outputs([Output(tmp_path / "new.bin"), None], [tmp_path / "in.bin", None, tmp_path / "gone"]) == [
        tmp_path / "new.bin"
    ]
    with pytest.raises(UserError, match="two --out outputs are the same path"):
        check_outputs([Output(tmp_path / "a" / ".." / "new.bin"), Output(tmp_path / "new.bin")])
