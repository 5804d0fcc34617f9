"""A stream's results stage: the checks before the first frame, smoothing with scene-cut resets, drift with
its warning, and records every N frames to the sink."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from runtime.errors import UserError
from runtime.postprocess import argmax_classes
from runtime.preprocess import FrameInfo
from runtime.results.records import ResultOptions
from runtime.results.reference import BINS, Reference
from runtime.results.smoothing import parse_smoothing
from runtime.results.stage import ResultsConfig, StreamResults

CLASSES = ("road", "car", "sky")


def _reference() -> Reference:
    hist = np.zeros(BINS)
    hist[20], hist[-1] = 0.1, 0.9  # low confidence: top-1 below 0.42
    return Reference(np.array([0.6, 0.2, 0.2]), hist, images=2, pixels=100)


def test_config_checks_before_the_first_frame() -> None:
    with pytest.raises(UserError, match="no cfnet.reference.*--calib-data"):
        ResultsConfig(drift_alert=0.2).check(None, ["logits"])
    with pytest.raises(UserError, match="ema:0.5 reads class scores; this model outputs masks only"):
        ResultsConfig(smooth=parse_smoothing("ema:0.5")).check(None, ["mask"])
    ResultsConfig(smooth=parse_smoothing("vote:3"), drift_alert=0.2).check(_reference(), ["mask"])


def test_records_every_n_frames_to_the_sink_with_shares() -> None:
    got: list[dict[str, Any]] = []
    results = StreamResults(
        ResultsConfig(options=ResultOptions("none", every=2)), CLASSES, None, stream="cam", source="cam.mp4",
        sink=got.append,
    )
    mask = np.zeros((4, 4), np.uint8)
    mask[0] = 2
    records = [results.observe(mask, None, None, frame, frame / 10) for frame in range(5)]
    assert [r is not None for r in records] == [True, False, True, False, True]
    assert [r["frame"] for r in got] == [0, 2, 4] and got[1]["time"] == 0.2 and got[0]["stream"] == "cam"
    assert results.latest_shares == {"road": 0.75, "car": 0.0, "sky": 0.25} and results.latest_drift is None


def test_ema_is_reset_by_a_scene_cut_and_by_reset() -> None:
    results = StreamResults(ResultsConfig(smooth=parse_smoothing("ema:0.2")), CLASSES, None, stream="s", source="s")
    dark = np.full((36, 64, 3), 20, np.uint8)
    bright = np.full((36, 64, 3), 230, np.uint8)
    first = np.zeros((3, 2, 2), np.float32)
    first[0] = 5.0
    second = first[[1, 0, 2]].copy()  # class 1 sure
    assert (argmax_classes(results.smooth_scores(first, dark)) == 0).all()
    assert (argmax_classes(results.smooth_scores(second, dark)) == 0).all()  # smoothed: the past still wins
    assert (argmax_classes(results.smooth_scores(second, bright)) == 1).all() and results.scene_cuts == 1
    results.reset()
    assert (argmax_classes(results.smooth_scores(first, bright)) == 0).all()  # no past after reset()
    mask = np.zeros((2, 2), np.uint8)
    assert results.smooth_mask(mask) is mask  # ema leaves masks alone
    with pytest.raises(UserError, match="outputs masks"):
        results.smooth_scores(mask)


def test_vote_smooths_masks_and_leaves_scores_alone() -> None:
    results = StreamResults(ResultsConfig(smooth=parse_smoothing("vote:3")), CLASSES, None, stream="s", source="s")
    scores = np.zeros((3, 2, 2), np.float32)
    assert results.smooth_scores(scores) is scores
    zero, one = np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8)
    assert [int(results.smooth_mask(m)[0, 0]) for m in (zero, zero, one, one)] == [0, 0, 0, 1]


def test_drift_figures_and_one_warning_per_episode() -> None:
    warnings: list[str] = []
    config = ResultsConfig(options=ResultOptions("none"), drift_alert=0.2, drift_hold_s=1.0, drift_window_s=0.5)
    records: list[dict[str, Any]] = []
    results = StreamResults(
        config, CLASSES, _reference(), stream="cam", source="0", warn=warnings.append, sink=records.append
    )
    sky = np.full((8, 8), 2, np.uint8)
    unsure = np.zeros((3, 8, 8), np.float32)  # a three-way tie: top-1 probability 1/3, below the threshold
    info = FrameInfo(frame_size=(8, 8), resized_size=(8, 8), input_size=(8, 8))
    for step in range(40):
        record = results.observe(sky, unsure, info, step, step / 10)
    assert record is records[-1] and record["drift"]["alerting"] is True and len(records) == 40
    reading = results.latest_drift
    assert reading is not None and reading.low_share == 1.0 and reading.low_excess == pytest.approx(1.0)
    assert len(warnings) == 1 and warnings[0].startswith("cam: drift score 1.00 above 0.2 for 1 s")



def test_without_a_sink_no_record_is_made_but_shares_and_drift_are_kept() -> None:
    results = StreamResults(ResultsConfig(), CLASSES, _reference(), stream="cam", source="0")
    mask = np.full((4, 4), 1, np.uint8)
    assert results.observe(mask, None, None, 0, 0.0) is None
    assert results.latest_shares["car"] == 1.0
    assert results.latest_drift is not None and results.latest_drift.low_share is None  # a mask: no confidence


def test_process_smooths_post_processes_and_observes_in_order() -> None:
    """`process` is `mask` (smooth the scores, post-process, smooth the mask) then `observe`; a voted mask is the
    caller's to keep."""
    got: list[dict[str, Any]] = []
    results = StreamResults(
        ResultsConfig(options=ResultOptions("none"), smooth=parse_smoothing("vote:3")), CLASSES, None,
        stream="s", source="s", sink=got.append,
    )
    info = FrameInfo(frame_size=(4, 8), resized_size=(2, 4), input_size=(2, 4))  # upscaled x2 to the frame
    frame = np.zeros((4, 8, 3), np.uint8)
    masks = []
    for label in (0, 0, 2, 2):
        scores = np.zeros((3, 2, 4), np.float32)
        scores[label] = 1.0
        masks.append(results.process(scores, info, frame, len(masks), len(masks) / 10))
    assert [int(m[0, 0]) for m in masks] == [0, 0, 0, 2] and masks[0].shape == (4, 8)
    assert [r["shares"]["sky"] for r in got] == [0.0, 0.0, 0.0, 1.0]
