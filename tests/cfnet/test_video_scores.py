"""Video ground truth from `cfnet data synth --video-labels`, and the video scores: flicker and mIoU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cfnet.cli import main
from cfnet.data.labels import ID_TO_TRAIN_ID
from cfnet.data.synth import video_label_name
from cfnet.metrics import VideoScores, confusion_matrix, scores

SIZE = (64, 128)


def test_video_labels_are_one_png_per_frame_that_moves_with_the_video(tmp_path: Path) -> None:
    video, labels = tmp_path / "drive.mp4", tmp_path / "labels"
    with pytest.raises(SystemExit) as ended:
        main(["data", "synth", str(tmp_path / "unused"), "--train", "0", "--val", "0", "--video", str(video),
              "--frames", "5", "--size", "64x128", "--video-labels", str(labels), "--json"])
    assert ended.value.code == 0
    names = sorted(p.name for p in labels.iterdir())
    assert names == [video_label_name(video, i) for i in range(5)]
    assert names[2] == "drive_000000_000002_gtFine_labelIds.png"
    frames = [cv2.imread(str(labels / name), cv2.IMREAD_UNCHANGED) for name in names]
    assert all(f.shape == SIZE and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[4])  # the camera moved
    assert len(np.unique(ID_TO_TRAIN_ID[frames[0]])) >= 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    with pytest.raises(SystemExit) as refused:  # the folder is not empty now
        main(["data", "synth", str(tmp_path / "unused"), "--train", "0", "--val", "0", "--video", str(video),
              "--frames", "2", "--video-labels", str(labels)])
    assert refused.value.code == 2 and len(list(labels.iterdir())) == 5


def test_video_labels_need_a_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["data", "synth", str(tmp_path / "d"), "--video-labels", str(tmp_path / "l")])
    assert ended.value.code == 2 and "--video-labels needs --video" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_flicker_counts_changes_where_the_truth_stands_still() -> None:
    truth = np.zeros((4, 4), np.uint8)
    moved = truth.copy()
    moved[0] = 1  # the truth changes on the first row
    moved[3, 3] = 255  # an ignored pixel
    pred = truth.copy()
    flicked = truth.copy()
    flicked[0, :2] = 1  # follows the truth: no flicker
    flicked[2, 1] = 2  # flicker
    scores_ = VideoScores(3)
    scores_.update(pred, truth)
    assert math.isnan(scores_.flicker)
    scores_.update(flicked, moved)
    assert (scores_.stable, scores_.changed) == (11, 1)  # 16 - 4 changed truth - 1 ignored
    scores_.update(flicked, moved)
    assert scores_.flicker == pytest.approx(1 / 26)
    result = scores_.scores()
    assert result["frames"] == 3 and result["flicker"] == pytest.approx(1 / 26)
    matrix = sum(confusion_matrix(p, t, 3) for p, t in [(pred, truth), (flicked, moved), (flicked, moved)])
    assert result["miou"] == pytest.approx(scores(matrix)["miou"])
    json.dumps(result)
    with pytest.raises(ValueError, match="frame size changed"):
        scores_.update(pred[:2], truth[:2])
