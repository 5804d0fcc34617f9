"""An output that cannot be written (a read-only file system, a full disk) is one line naming it, exit 2, and
nothing half-written, in every writing command (issue 21 items 9 and 15).

Real file systems: a read-only tmpfs and a 64 KiB tmpfs filled to the last byte (tests run as root here; where
mounting is not permitted the tests are skipped with that reason)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cfnet.cli import main


def _mount(folder: Path, options: str) -> None:
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "ro"
    _mount(folder, "size=1m,ro")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "full"
    _mount(folder, "size=64k")
    try:
        with open(folder / "filler", "wb", buffering=0) as filler:  # every byte taken
            try:
                while True:
                    filler.write(b"\0" * 4096)
            except OSError:
                pass
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import cv2
    import numpy as np

    from cfnet.checkpoint import save_checkpoint
    from cfnet.data.synth import synthesize
    from cfnet.models import build_model
    from tests.runtime.helpers import export_tiny, synthetic_frames, tiny_metadata, write_video_file

    folder = tmp_path_factory.mktemp("inputs")
    model = build_model("unet", preset="tiny")
    cv2.imwrite(str(folder / "a.png"), np.zeros((48, 64, 3), np.uint8))
    return {
        "onnx": export_tiny(folder / "tiny.onnx", tiny_metadata()),
        "video": write_video_file(folder / "s.mp4", synthetic_frames(3, (48, 64))),
        "image": folder / "a.png",
        "data": synthesize(folder / "data", train=1, val=1, size=(64, 64), seed=0),
        "ckpt": save_checkpoint(folder / "unet.pt", model=model, iteration=1, config=dict(model.config)),
    }


TINY = ["--model", "unet", "--preset", "tiny"]
# command -> its arguments writing into folder `o` (what a missing output is named by comes first in the line)
COMMANDS: dict[str, Callable[[dict[str, Path], Path], list[object]]] = {
    "segment": lambda i, o: ["segment", i["image"], "--model", i["onnx"], "--out", o / "seg"],
    "export onnx": lambda i, o: ["export", "onnx", *TINY, "--size", "64x64", "--out", o / "m.onnx"],
    "export triton": lambda i, o: ["export", "triton", i["onnx"], "--out", o / "repo", "--backend", "python"],
    "train": lambda i, o: ["train", *TINY, "--data", i["data"], "--out", o / "run", "--iters", "1", "--crop", "64x64",
                           "--workers", "0"],
    "evaluate --save-predictions": lambda i, o: ["evaluate", "--checkpoint", i["ckpt"], "--data", i["data"],
                                                 "--save-predictions", o / "pred"],
    "data synth": lambda i, o: ["data", "synth", o / "d", "--train", "1", "--val", "0", "--size", "64x64"],
    "data synth --video": lambda i, o: ["data", "synth", o / "d", "--train", "0", "--val", "0", "--video", o / "v.mp4",
                                        "--frames", "30", "--size", "64x64"],
    "bench": lambda i, o: ["bench", "--models", "unet", "--preset", "tiny", "--size", "64x64", "--backends", "torch",
                           "--warmup", "0", "--iters", "1", "--out", o / "b"],
    "demo": lambda i, o: ["demo", "--out", o / "demo", "--train-iters", "1", "--images", "4", "--size", "64x128"],
    "ablate": lambda i, o: ["ablate", "--data", i["data"], "--out", o / "ab", "--variants", "segformer", "--seeds", "1",
                            "--iters", "1", "--crop", "64x64", "--batch-size", "1"],
    "stream": lambda i, o: ["stream", i["video"], "--model", i["onnx"], "--out", o / "o.mp4"],
}
FULL = sorted(set(COMMANDS) - {"stream"})  # a full disk while streaming: the stream's own tests (every MP4 write)


def _fails_naming(args: list[object], folder: Path, reason: str, capsys: pytest.CaptureFixture[str]) -> Path:
    """Exit 2 and one `error: cannot write PATH (reason)` line, the last on stderr (after the command's progress),
    PATH in `folder` and not a file; no temp file left."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert [line for line in lines if "error:" in line] == lines[-1:], err
    match = re.fullmatch(rf"error: cannot write (\S+) \({reason}\)", lines[-1])
    assert match, err
    named = Path(match[1])
    assert named.is_relative_to(folder) and not named.is_file(), err
    leftovers = [p for p in folder.rglob("*") if re.search(r"\.tmp-|\.part", p.name)]
    assert leftovers == []
    return named


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_read_only_output_is_refused_before_anything_runs(
    command: str, inputs: dict[str, Path], read_only: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails_naming(COMMANDS[command](inputs, read_only), read_only, "read-only file system", capsys)


@pytest.mark.parametrize("command", FULL)
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(
    command: str, inputs: dict[str, Path], full_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails_naming(COMMANDS[command](inputs, full_disk), full_disk, "no space left on device", capsys)


def test_the_line_names_the_output_not_its_temp_file() -> None:
    import errno

    from runtime.errors import output_name, write_failure

    assert output_name("out/.m.tmp-x1y_2z.onnx") == "out/m.onnx"  # cfnet.atomic
    assert output_name("out/.seg.4242.part.mp4") == "out/seg.mp4"  # runtime.files.part_path
    assert output_name("out/.a.png.4242.k2j_x9.part") == "out/a.png"  # runtime.files.write_bytes
    assert output_name("out/.d.tmp-abc123/gtFine/x.png") == "out/d"  # a folder built under a temp name
    assert write_failure(OSError(errno.ENOENT, "gone", "x")) is None  # not a write failure: a traceback as before
    copy = OSError([("src", "repo/.r.tmp-q1/m/x.py", "[Errno 28] No space left on device: 'x.py'")])  # shutil.Error
    assert write_failure(copy) == "cannot write repo/r (no space left on device)"
