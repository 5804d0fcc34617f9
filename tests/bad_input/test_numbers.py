"""Numbers that make no sense are refused up front in one line (exit 2), by one float type used everywhere."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from cfnet.cli import cli
from runtime.options import Float
from tests.helpers import fails_cleanly


def _options() -> list[tuple[tuple[str, ...], click.Option]]:
    """Every option of every command (command path without `cfnet`, the option)."""
    found = []

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
        found.extend((path, p) for p in command.params if isinstance(p, click.Option))

    walk(cli, ())
    return found


FLOAT_OPTIONS = [(path, opt) for path, opt in _options() if isinstance(opt.type, click.types.FloatParamType)]


def test_every_float_option_refuses_non_finite_values() -> None:
    """`click.FloatRange` and `type=float` (or a float default, which click turns into FLOAT) accept `nan`."""
    plain = [f"{' '.join(path)} {opt.opts[0]}" for path, opt in FLOAT_OPTIONS if not isinstance(opt.type, Float)]
    assert plain == []
    assert len(FLOAT_OPTIONS) >= 14  # the walk found the commands' float options


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    "option", [f"{' '.join(path)} {opt.opts[0]}" for path, opt in FLOAT_OPTIONS], ids=lambda text: text
)
def test_a_non_finite_float_is_one_line_naming_the_option(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given first, the option is converted before any other check of the command runs."""
    *command, name = option.split()
    err = fails_cleanly([*command, name, value], capsys)
    assert f"'{name}'" in err and "not a finite number" in err


STREAM = ["stream", "x.mp4", "--model", "m.onnx"]
SEGMENT = ["segment", "x.png", "--model", "m.onnx", "--out", "{out}"]
# case -> arguments; the one error line names the case's option (its second word)
CASES = {
    "train --lr 0": ["train", "--lr", "0"],
    "train --lr -1": ["train", "--lr", "-1"],
    "train --temperature 0": ["train", "--temperature", "0"],
    "train --seed -1": ["train", "--seed", "-1"],
    "train --aux-weight -0.1": ["train", "--aux-weight", "-0.1"],
    "synth --seed -1": ["data", "synth", "{out}", "--seed", "-1"],
    "synth --seed 2**32": ["data", "synth", "{out}", "--seed", str(2**32)],
    "synth --fps 0": ["data", "synth", "{out}", "--fps", "0"],
    "serve --timeout -1": ["serve", "{out}", "--timeout", "-1"],
    "serve --timeout 0": ["serve", "{out}", "--timeout", "0"],
    "build-engine --workspace-gb 0": ["build-engine", "m.onnx", "--out", "m.engine", "--workspace-gb", "0"],
    "export --min-agreement 1.5": ["export", "onnx", "--out", "m.onnx", "--min-agreement", "1.5"],
    "export --min-agreement 0": ["export", "onnx", "--out", "m.onnx", "--min-agreement", "0"],
    "stream --alpha 2": [*STREAM, "--alpha", "2"],
    "stream --batch-timeout -1": [*STREAM, "--batch-timeout", "-1"],
    "stream --batch-timeout 1e300": [*STREAM, "--batch-timeout", "1e300"],
    "stream --stall-timeout 0": [*STREAM, "--stall-timeout", "0"],
    "stream --stall-timeout 1e300": [*STREAM, "--stall-timeout", "1e300"],
    "segment --mean nan,nan,nan": [*SEGMENT, "--mean", "nan,nan,nan"],
    "segment --std nan,1,1": [*SEGMENT, "--std", "nan,1,1"],
    "segment --std inf,1,1": [*SEGMENT, "--std", "inf,1,1"],
    "stream --mean 0.5,inf,0.5": [*STREAM, "--mean", "0.5,inf,0.5"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_out_of_range_value_is_one_line_and_leaves_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    err = fails_cleanly([a.format(out=tmp_path / "out") for a in CASES[case]], capsys)
    assert f"'{case.split()[1]}'" in err
    assert list(tmp_path.iterdir()) == []


def test_train_refusing_a_temperature_leaves_no_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--temperature nan` once trained and left a run folder with metrics.csv."""
    run = tmp_path / "run"
    args = ["train", "--model", "cfnet-pspnet", "--preset", "tiny", "--data", str(tmp_path), "--out", str(run)]
    fails_cleanly([*args, "--temperature", "nan"], capsys)
    assert not run.exists()


def test_metadata_with_a_non_finite_std_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import cv2
    import numpy as np

    from tests.runtime.helpers import export_tiny, tiny_metadata

    model = export_tiny(tmp_path / "nan.onnx", {**tiny_metadata(), "cfnet.std": json.dumps([float("nan"), 1, 1])})
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((48, 64, 3), np.uint8))
    args = ["segment", str(tmp_path / "a.png"), "--model", str(model), "--out", str(tmp_path / "s")]
    err = fails_cleanly(args, capsys)
    assert "must be finite" in err and not (tmp_path / "s").exists()
