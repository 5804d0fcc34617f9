"""The export's reference (class shares, top-1 probability histogram) and the run-time drift score and alert."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.results.drift import DriftMonitor, js_divergence, low_confidence_share
from runtime.results.reference import BINS, Reference, ReferenceBuilder, top1_probability


def _reference(shares: list[float], low: float = 0.1) -> Reference:
    """A reference whose top-1 histogram puts `low` of the pixels in bin 2, the rest in the last bin."""
    hist = np.zeros(BINS)
    hist[2], hist[-1] = low, 1 - low
    return Reference(np.array(shares), hist, images=4, pixels=1000)


def test_js_divergence_bounds_and_a_value_by_hand() -> None:
    assert js_divergence(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    # p = (1, 0), q = (0.5, 0.5): m = (0.75, 0.25); KL(p||m) = log2(4/3); KL(q||m) = 0.5 log2(2/3) + 0.5 log2(2)
    expected = (np.log2(4 / 3) + 0.5 * np.log2(2 / 3) + 0.5) / 2
    assert js_divergence(np.array([2.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same length"):
        js_divergence(np.array([1.0]), np.array([0.5, 0.5]))


def test_top1_probability_and_low_confidence_share() -> None:
    scores = np.zeros((3, 4, 4), np.float32)
    scores[0, :2] = 10.0  # top two rows sure of class 0, the rest a three-way tie
    top1 = top1_probability(scores)
    assert top1[:2] == pytest.approx(1 / (1 + 2 * np.exp(-10)), rel=1e-6)
    assert top1[2:] == pytest.approx(1 / 3)
    assert low_confidence_share(scores, 0.5, stride=1) == 0.5
    assert top1_probability(scores, stride=2).shape == (2, 2)


def test_builder_and_json_round_trip() -> None:
    builder = ReferenceBuilder(3)
    scores = np.zeros((3, 4, 5), np.float32)
    scores[1, :, :2] = 5.0  # 8 pixels class 1 (sure), 12 pixels a tie -> class 0 (first), top-1 1/3
    builder.add(scores)
    builder.add(scores)
    reference = builder.build()
    assert reference.shares.tolist() == [0.6, 0.4, 0.0]
    assert reference.images == 2 and reference.pixels == 40
    assert reference.top1_hist[int(BINS / 3)] == pytest.approx(0.6)
    assert reference.low_share == pytest.approx(0.6)  # the first bin reaching 10 % holds 60 %
    assert reference.low_threshold == pytest.approx((int(BINS / 3) + 1) / BINS)
    again = Reference.from_json(reference.to_json(), 3)
    assert np.allclose(again.shares, reference.shares) and np.allclose(again.top1_hist, reference.top1_hist)
    assert Reference.from_json(json.loads(reference.to_json()), 3).pixels == 40  # a sidecar's decoded object
    with pytest.raises(ValueError, match="3 x H x W"):
        builder.add(scores[:2])
    with pytest.raises(ValueError, match="no image"):
        ReferenceBuilder(2).build()


@pytest.mark.parametrize(
    ("change", "message"),
    [({"version": 2}, "version"), ({"shares": [0.5, 0.5]}, "2 class shares for 3"), ({"shares": [1, 1, 1]}, "sum to 1"),
     ({"top1_hist": [1.0]}, "2 bins"), ({"shares": "x"}, "non-negative numbers"), ({"images": 0}, "images")],
)
def test_malformed_references_are_refused(change: dict[str, object], message: str) -> None:
    data = json.loads(_reference([0.5, 0.3, 0.2]).to_json())
    with pytest.raises(ValueError, match=message):
        Reference.from_json(json.dumps({**data, **change}), 3)


def test_in_distribution_scores_low_and_a_shift_scores_high() -> None:
    reference = _reference([0.5, 0.3, 0.2], low=0.1)
    assert reference.low_threshold == pytest.approx(3 / BINS) and reference.low_share == pytest.approx(0.1)
    monitor = DriftMonitor(reference, window_s=2.0)
    for i in range(20):
        reading = monitor.update(np.array([0.52, 0.28, 0.2]), 0.1, i / 10)
    assert reading.js < 0.01 and reading.low_excess == pytest.approx(0, abs=1e-9) and reading.score == reading.js
    for i in range(20, 60):
        reading = monitor.update(np.array([0.05, 0.05, 0.9]), 0.55, i / 10)
    assert reading.low_share == pytest.approx(0.55)
    assert reading.low_excess == pytest.approx(0.5)  # (0.55 - 0.1) / (1 - 0.1)
    assert reading.score == reading.low_excess and reading.js > 0.3
    assert not reading.alerting and reading.alert is None  # no threshold given


def test_the_window_forgets_old_frames_and_restarts_when_time_goes_back() -> None:
    monitor = DriftMonitor(_reference([0.5, 0.5]), window_s=1.0)
    monitor.update(np.array([1.0, 0.0]), None, 0.0)
    assert monitor.update(np.array([0.5, 0.5]), None, 1.5).js == 0  # the first frame left the window
    monitor.update(np.array([1.0, 0.0]), None, 1.6)
    assert monitor.update(np.array([0.5, 0.5]), None, 0.1).js == 0  # time went back: a fresh window
    reading = monitor.update(np.array([0.5, 0.5]), None, 0.2)
    assert reading.low_share is None and reading.low_excess is None  # a mask-only model: shares only


def test_the_alert_waits_for_the_hold_and_warns_once_per_episode() -> None:
    monitor = DriftMonitor(_reference([0.5, 0.5]), window_s=0.5, alert=0.2, hold_s=3.0, name="cam")
    shifted, normal = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    messages = []
    for step in range(100):  # 10 s shifted, 2 s normal, 8 s shifted at 5 frames per second
        t = step / 5
        reading = monitor.update(normal if 10 <= t < 12 else shifted, None, t)
        if reading.alert:
            messages.append((t, reading.alert))
    assert [t for t, _ in messages] == [3.0, 15.4]  # above from t = 0, and from 12.4 (the 0.5 s window is shifted)
    assert messages[0][1].startswith("cam: drift score 0.31 above 0.2 for 3 s")
    assert monitor.update(shifted, None, 20.2).alerting


@pytest.mark.parametrize("kwargs", [{"window_s": 0}, {"alert": 1.5}, {"alert": 0}, {"hold_s": -1}])
def test_bad_monitor_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="drift"):
        DriftMonitor(_reference([1.0]), **kwargs)  # type: ignore[arg-type]
