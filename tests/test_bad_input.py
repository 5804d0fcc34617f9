"""The fault sweep across every command: bad input gives one `error: ...` line, exit 2, and no output file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from cfnet.cli import main


class _Payload:
    """A pickle whose loading would create a marker file: a checkpoint must never execute it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _fails_cleanly(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


def _fill(args: list[str], files: dict[str, Path]) -> list[str]:
    return [arg.format(**{k: str(v) for k, v in files.items()}) for arg in args]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    corrupt_png = tmp_path / "corrupt.png"
    corrupt_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    corrupt_onnx = tmp_path / "corrupt.onnx"
    corrupt_onnx.write_bytes(b"not a protobuf at all")
    corrupt_ckpt = tmp_path / "corrupt.pt"
    corrupt_ckpt.write_bytes(b"PK\x03\x04 truncated zip")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    return {
        "png": corrupt_png,
        "onnx": corrupt_onnx,
        "ckpt": corrupt_ckpt,
        "evil": evil,
        "marker": marker,
        "out": tmp_path / "out",
        "missing": tmp_path / "missing",
    }


CASES = {
    "models: unknown model": ["models", "--model", "nope"],
    "models: malformed size": ["models", "--size", "512by512"],
    "data synth: malformed size": ["data", "synth", "{out}", "--size", "0x512"],
    "train: unknown model": ["train", "--model", "nope", "--data", "{missing}", "--out", "{out}"],
    "train: missing data": ["train", "--model", "unet", "--preset", "tiny", "--data", "{missing}", "--out", "{out}"],
    "evaluate: corrupt checkpoint": ["evaluate", "--checkpoint", "{ckpt}", "--data", "{missing}"],
    "export: unknown model": ["export", "onnx", "--model", "nope", "--out", "{out}.onnx"],
    "export: corrupt checkpoint": ["export", "onnx", "--checkpoint", "{ckpt}", "--out", "{out}.onnx"],
    "export: missing checkpoint": ["export", "onnx", "--checkpoint", "{missing}.pt", "--out", "{out}.onnx"],
    "export: malformed size": ["export", "onnx", "--model", "unet", "--size", "64x", "--out", "{out}.onnx"],
    "build-engine: not an ONNX file": ["build-engine", "{png}", "--out", "{out}.engine"],
    "build-engine: malformed shape": ["build-engine", "{onnx}", "--out", "{out}.engine", "--min-shape", "1x3x64"],
    "segment: corrupt ONNX": ["segment", "{png}", "--model", "{onnx}", "--out", "{out}"],
    "segment: missing model": ["segment", "{png}", "--model", "{missing}.onnx", "--out", "{out}"],
    "stream: missing video": ["stream", "{missing}.mp4", "--model", "{onnx}", "--out", "{out}.mp4"],
    "bench: unknown model": ["bench", "--models", "nope", "--out", "{out}"],
    "build-engine: missing ONNX": ["build-engine", "{missing}.onnx", "--out", "{out}.engine"],
    "demo: --out is a file": ["demo", "--out", "{png}"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_no_output(
    case: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _fails_cleanly(_fill(CASES[case], files), capsys)
    out = files["out"]
    leftovers = [p for p in out.parent.iterdir() if p.name.startswith(out.name)]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("command", [["evaluate", "--data", "{missing}"], ["export", "onnx", "--out", "{out}.onnx"]])
def test_a_malicious_checkpoint_is_refused_and_never_executed(
    command: list[str], files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    err = _fails_cleanly(_fill(command, files) + ["--checkpoint", str(files["evil"])], capsys)
    assert str(files["evil"]) in err
    assert not files["marker"].exists(), "the pickle's payload ran"
    assert not Path(f"{files['out']}.onnx").exists()
