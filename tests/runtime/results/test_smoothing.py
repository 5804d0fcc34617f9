"""Temporal smoothing: the option strings, `ema:A` against its formula, `vote:K` against a per-pixel mode,
resets, and the scene-cut detector that triggers them."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.postprocess import argmax_classes
from runtime.results.scenecut import SceneCut
from runtime.results.smoothing import (
    EmaSmoother,
    HoldSmoother,
    SmoothSpec,
    VoteSmoother,
    make_smoother,
    parse_smoothing,
)


@pytest.mark.parametrize(
    ("text", "spec"),
    [("ema:0.5", SmoothSpec("ema", 0.5)), ("EMA:1", SmoothSpec("ema", 1.0)), ("vote:5", SmoothSpec("vote", 5)),
     ("hold:0.15", SmoothSpec("hold", 0.15))],
)
def test_parse_smoothing(text: str, spec: SmoothSpec) -> None:
    assert parse_smoothing(text) == spec
    assert str(parse_smoothing(text)) == f"{spec.kind}:{spec.value:g}"
    assert parse_smoothing(text).needs_logits == (spec.kind != "vote")


@pytest.mark.parametrize(
    ("text", "message"),
    [("ema:2", "A in \\(0, 1\\]"), ("ema:0", "A in"), ("ema:x", "A in"), ("vote:0", "K in 1..255"),
     ("vote:2.5", "K in"), ("vote:300", "K in"), ("median:3", "expected ema:A"), ("ema", "A in"),
     ("hold:0", "D in \\(0, 1\\)"), ("hold:1", "D in")],
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
