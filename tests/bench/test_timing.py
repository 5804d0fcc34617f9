"""The timing loop: warm-up excluded, one call of each backend per round, rotating order; summaries."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from bench.timing import Timing, interleaved


def test_interleaved_runs_every_call_once_per_round_in_rotating_order() -> None:
    log: list[str] = []
    calls = {name: (lambda n=name: log.append(n)) for name in ("a", "b", "c")}
    timings = interleaved(calls, warmup=2, iters=4, pause=0)
    assert len(log) == 3 * 6
    rounds = [log[i : i + 3] for i in range(0, len(log), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert {r[0] for r in rounds} == {"a", "b", "c"}  # nobody always goes first
    assert {name: len(t.samples) for name, t in timings.items()} == {"a": 4, "b": 4, "c": 4}


def test_warmup_rounds_are_not_recorded() -> None:
    calls_seen: list[int] = []

    def call() -> None:
        calls_seen.append(1)

    timings = interleaved({"x": call}, warmup=3, iters=2, pause=0)
    assert len(calls_seen) == 5 and len(timings["x"].samples) == 2


def test_summaries_match_independent_definitions() -> None:
    samples = tuple(float(v) for v in np.random.default_rng(0).uniform(0.01, 0.2, size=11))
    timing = Timing(samples)
    assert timing.median == pytest.approx(statistics.median(samples))
    ordered = sorted(samples)
    position = 0.9 * (len(ordered) - 1)  # linear interpolation between closest ranks
    low = int(position)
    expected_p90 = ordered[low] + (ordered[low + 1] - ordered[low]) * (position - low)
    assert timing.p90 == pytest.approx(expected_p90)
    assert timing.mean == pytest.approx(statistics.fmean(samples))


def test_bad_iteration_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        interleaved({"x": lambda: None}, warmup=0, iters=0)


def test_a_call_that_fails_leaves_the_rounds_and_the_others_are_timed() -> None:
    seen: list[str] = []

    def flaky() -> None:
        seen.append("flaky")
        if len(seen) == 2:
            raise RuntimeError("CUDA error: an illegal memory access")

    errors: dict[str, BaseException] = {}
    timings = interleaved({"ok": lambda: None, "flaky": flaky}, warmup=1, iters=3, pause=0, errors=errors)
    assert set(timings) == {"ok"} and len(timings["ok"].samples) == 3
    assert str(errors["flaky"]) == "CUDA error: an illegal memory access" and seen == ["flaky", "flaky"]
    with pytest.raises(RuntimeError):  # without `errors`, a failure is the caller's
        seen.clear()
        interleaved({"flaky": flaky}, warmup=1, iters=3, pause=0)
