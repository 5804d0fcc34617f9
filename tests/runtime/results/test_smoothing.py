"""Temporal smoothing: the option strings, `ema:A` against its formula, `vote:K` against a per-pixel mode,
`flow:A:D` carrying the past along a moving scene, resets, and the scene-cut detector that triggers them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.postprocess import argmax_classes
from runtime.results.scenecut import SceneCut
from runtime.results.smoothing import (
    FLOW_DEFAULTS,
    EmaSmoother,
    FlowSmoother,
    HoldSmoother,
    SmoothSpec,
    VoteSmoother,
    make_smoother,
    parse_smoothing,
)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("ema:0.5", SmoothSpec("ema", 0.5)),
        ("EMA:1", SmoothSpec("ema", 1.0)),
        ("vote:5", SmoothSpec("vote", 5)),
        ("hold:0.15", SmoothSpec("hold", 0.15)),
    ],
)
def test_parse_smoothing(text: str, spec: SmoothSpec) -> None:
    assert parse_smoothing(text) == spec
    assert str(parse_smoothing(text)) == f"{spec.kind}:{spec.value:g}"
    assert parse_smoothing(text).needs_logits == (spec.kind != "vote")


@pytest.mark.parametrize(
    ("text", "alpha", "margin"),
    [("flow", *FLOW_DEFAULTS), ("flow:0.5", 0.5, FLOW_DEFAULTS[1]), ("FLOW:0.5:0", 0.5, 0.0), ("flow:1:0.2", 1.0, 0.2)],
)
def test_parse_flow_fills_in_the_measured_defaults(text: str, alpha: float, margin: float) -> None:
    spec = parse_smoothing(text)
    assert spec == SmoothSpec("flow", alpha, margin) and spec.needs_logits
    assert parse_smoothing(str(spec)) == spec  # what the reports print reads back


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ema:2", "A in \\(0, 1\\]"),
        ("ema:0", "A in"),
        ("ema:x", "A in"),
        ("vote:0", "K in 1..255"),
        ("vote:2.5", "K in"),
        ("vote:300", "K in"),
        ("median:3", "expected ema:A"),
        ("ema", "A in"),
        ("hold:0", "D in \\(0, 1\\)"),
        ("hold:1", "D in"),
        ("flow:0", "flow:A:D takes"),
        ("flow:0.5:1", "margin D"),
        ("flow:x", "flow:A:D"),
        ("flow:0.5:0.1:3", "flow:A:D"),
        ("flow:", "flow:A:D"),
    ],
)
def test_parse_smoothing_refuses_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_smoothing(text)
    assert "\n" not in str(caught.value) and text in str(caught.value)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=0))
    return e / e.sum(axis=0)


def test_ema_follows_its_formula_and_resets() -> None:
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((5, 7, 9)).astype(np.float32) * 3 for _ in range(6)]
    smoother = make_smoother(parse_smoothing("ema:0.3"), 5)
    assert isinstance(smoother, EmaSmoother)
    expected = _softmax(frames[0].astype(np.float64))
    np.testing.assert_allclose(smoother.update(frames[0]), expected, rtol=1e-5, atol=1e-6)
    for frame in frames[1:]:
        expected = 0.3 * _softmax(frame.astype(np.float64)) + 0.7 * expected
        got = smoother.update(frame)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (5, 7, 9)
    smoother.reset()
    np.testing.assert_allclose(smoother.update(frames[0]), _softmax(frames[0].astype(np.float64)), rtol=1e-5, atol=1e-6)
    assert smoother.update(frames[0][:, :3]).shape == (5, 3, 9)  # a new size starts afresh
    with pytest.raises(ValueError, match="C x H x W"):
        smoother.update(frames[0][0])


def test_ema_absorbs_a_one_frame_flip_and_follows_a_real_change() -> None:
    steady = np.zeros((2, 4, 4), np.float32)
    steady[0] = 2.0  # class 0, p = 0.88
    flipped = steady[::-1].copy()  # class 1 as sure, for one frame
    smoother = EmaSmoother(0.4)
    for _ in range(3):
        smoother.update(steady)
    assert (argmax_classes(smoother.update(flipped)) == 0).all()  # p0 = 0.6 * 0.88 + 0.4 * 0.12 = 0.58
    for _ in range(5):
        smoother.update(steady)
    labels = [int(argmax_classes(smoother.update(flipped))[0, 0]) for _ in range(3)]
    assert labels == [0, 1, 1]  # a change that stays shows in its second frame
    identity = EmaSmoother(1.0)
    identity.update(steady)
    assert (argmax_classes(identity.update(flipped)) == 1).all()


def test_hold_keeps_a_label_until_another_leads_by_the_margin() -> None:
    rng = np.random.default_rng(4)
    frames = [rng.standard_normal((4, 6, 7)).astype(np.float32) for _ in range(8)]
    smoother = make_smoother(parse_smoothing("hold:0.2"), 4)
    assert isinstance(smoother, HoldSmoother)
    held = None
    for frame in frames:  # the rule, written out per pixel
        p = _softmax(frame.astype(np.float64))
        best = p.argmax(axis=0)
        if held is not None:
            kept = np.take_along_axis(p, held[None], 0)[0]
            best = np.where(p.max(axis=0) - kept > 0.2, best, held)
        held = best
        assert np.array_equal(argmax_classes(smoother.update(frame)), best)
    steady = np.zeros((2, 3, 3), np.float32)
    steady[0] = 0.2  # class 0 at p = 0.55
    close = steady[::-1].copy()  # class 1 at 0.55: a lead of 0.1, under the margin
    smoother = HoldSmoother(0.2)
    smoother.update(steady)
    assert (argmax_classes(smoother.update(close)) == 0).all()
    smoother.reset()
    assert (argmax_classes(smoother.update(close)) == 1).all()
    with pytest.raises(ValueError, match="C x H x W"):
        smoother.update(close[0])


def _mode(window: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Per-pixel most frequent label, ties to the newest mask's label if tied, else the lowest id."""
    stack = np.stack(window)
    counts = np.stack([(stack == c).sum(axis=0) for c in range(num_classes)])
    best = counts.argmax(axis=0)
    newest = window[-1]
    tied = np.take_along_axis(counts, newest[None].astype(np.int64), 0)[0] == counts.max(axis=0)
    return np.where(tied, newest, best).astype(np.uint8)


def test_vote_is_the_per_pixel_majority_of_the_last_k_masks() -> None:
    rng = np.random.default_rng(1)
    masks = [rng.integers(0, 4, (6, 8)).astype(np.uint8) for _ in range(12)]
    smoother = make_smoother(parse_smoothing("vote:3"), 4)
    assert isinstance(smoother, VoteSmoother)
    for i, mask in enumerate(masks):
        got = smoother.update(mask)
        assert np.array_equal(got, _mode(masks[max(0, i - 2) : i + 1], 4)), i
    smoother.reset()
    assert np.array_equal(smoother.update(masks[0]), masks[0])


def test_vote_one_and_two_change_nothing_and_bad_masks_are_refused() -> None:
    rng = np.random.default_rng(2)
    masks = [rng.integers(0, 3, (4, 5)).astype(np.uint8) for _ in range(5)]
    for k in (1, 2):
        smoother = VoteSmoother(k, 3)
        for mask in masks:
            assert np.array_equal(smoother.update(mask), mask)
    smoother = VoteSmoother(3, 3)
    with pytest.raises(ValueError, match="class id 3"):
        smoother.update(np.full((2, 2), 3, np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        smoother.update(np.zeros((2, 2), np.int32))
    assert smoother.update(np.ones((3, 3), np.uint8)).shape == (3, 3)


def test_vote_removes_a_one_frame_flicker() -> None:
    base = np.zeros((4, 4), np.uint8)
    flicker = base.copy()
    flicker[1:3, 1:3] = 2
    smoother = VoteSmoother(5, 3)
    outputs = [smoother.update(m).copy() for m in (base, base, flicker, base, base)]
    assert all((out == 0).all() for out in outputs[1:])


def test_scene_cut_on_another_scene_not_on_motion() -> None:
    rng = np.random.default_rng(3)
    scene = rng.integers(0, 120, (90, 160, 3)).astype(np.uint8)
    moved = np.roll(scene, 6, axis=1)
    other = rng.integers(130, 255, (90, 160, 3)).astype(np.uint8)
    detector = SceneCut()
    assert [detector(f) for f in (scene, moved, moved, other, other)] == [False, False, False, True, False]
    detector.reset()
    assert detector(scene) is False
    with pytest.raises(ValueError, match="threshold"):
        SceneCut(1.5)


def _moving_scene(frames: int, step: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """A textured scene panning right by `step` pixels a frame, a 16 x 16 object of class 1 moving with it:
    the views, the objects' true masks, and 2-class logits that are sure of the object except in the last frame,
    where the model hesitates (class 0 a little ahead everywhere)."""
    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (64, 128)).astype(np.uint8), (0, 0), 2)
    views, truths, logits = [], [], []
    for k in range(frames):
        truth = np.zeros((64, 128), bool)
        truth[24:40, 20 + step * k : 36 + step * k] = True
        scores = np.zeros((2, 64, 128), np.float32)
        scores[1] = np.where(truth, 3.0 if k < frames - 1 else -0.3, -3.0)
        views.append(np.roll(texture, step * k, axis=1))
        truths.append(truth)
        logits.append(scores)
    return views, truths, logits


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_flow_carries_the_past_along_the_motion() -> None:
    """Where the model hesitates, the past holds the object where it is now (not where it was): the flow's
    direction and scale are right. Averaging in place (ema, the same weight) smears it behind the motion."""
    views, truths, logits = _moving_scene(6, step=4)
    flow, ema = FlowSmoother(0.5, 0.0), EmaSmoother(0.5)
    for view, scores in zip(views, logits, strict=True):
        carried = argmax_classes(flow.update(scores, view)) == 1
        smeared = argmax_classes(ema.update(scores)) == 1
    assert argmax_classes(logits[-1]).max() == 0  # unsmoothed, the object is lost in the last frame
    assert _iou(carried, truths[-1]) > 0.9
    assert _iou(smeared, truths[-1]) < 0.8


def test_flow_without_views_is_ema_then_hold_and_reset_forgets() -> None:
    rng = np.random.default_rng(1)
    frames = [rng.normal(0, 1, (3, 8, 8)).astype(np.float32) for _ in range(5)]
    flow, ema, held = FlowSmoother(0.6, 0.2), EmaSmoother(0.6), None
    for scores in frames:
        expected = ema.update(scores).copy()
        for c in range(3):
            if held is not None:
                expected[c][held == c] += 0.2
        held = argmax_classes(expected)
        np.testing.assert_allclose(flow.update(scores, None), expected, rtol=1e-6, atol=1e-6)
    flow.reset()
    np.testing.assert_allclose(flow.update(frames[0], None), EmaSmoother(1.0).update(frames[0]), atol=1e-6)
