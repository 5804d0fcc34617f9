"""`cfnet segment` as a user drives it: a folder of images, class names inline, a 0..255 mean (warned)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cfnet.cli import main
from tests.runtime.helpers import synthetic_frames


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    return out, err


def test_segment_a_folder_segments_the_images_in_it(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, frame in enumerate(synthetic_frames(2)):
        cv2.imwrite(str(photos / f"f{i}.png"), frame)
    (photos / "notes.txt").write_text("not an image")
    out, _ = _run(["segment", str(photos), "--model", str(tiny_onnx), "--out", str(tmp_path / "seg"), "--json"], capsys)
    written = json.loads(out)
    assert [Path(w["image"]).name for w in written] == ["f0.png", "f1.png"]
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == [
        "f0_mask.png", "f0_overlay.png", "f1_mask.png", "f1_overlay.png"
    ]


def test_inline_class_names_and_a_0_255_mean_warning(
    bare_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), synthetic_frames(1)[0])
    args = ["segment", str(image), "--model", str(bare_onnx), "--out", str(tmp_path / "seg"), "--json"]
    args += ["--classes", '["road", "car", "sky", "tree"]', "--input-size", "48x64", "--mean", "124,116,104"]
    out, err = _run(args, capsys)
    assert set(json.loads(out)[0]["classes"]) <= {"road", "car", "sky", "tree"}
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: --mean 124,116,104 looks like the 0..255 scale")
    assert np.asarray(cv2.imread(str(tmp_path / "seg" / "street_mask.png"))).max() < 4
