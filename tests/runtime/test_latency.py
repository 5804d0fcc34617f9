"""Latencies: bounded, counted whole, and reserved at the start."""

import tracemalloc

import numpy as np
import pytest

from runtime.latency import BUCKETS, Latencies


def test_latencies_are_bounded_and_counted_whole() -> None:
    values = np.random.default_rng(0).exponential(0.02, 10_000)
    latencies = Latencies(window=100)
    for v in values:
        latencies.append(float(v))
    assert latencies.recent().tolist() == values[-100:].tolist()  # memory bounded: the latest 100
    assert latencies.count == 10_000 and latencies.total == pytest.approx(values.sum())
    assert latencies.cumulative() == [int((values <= b).sum()) for b in BUCKETS]
    recent = values[-100:] * 1e3
    assert latencies.summary() == {
        "median": pytest.approx(np.median(recent)),
        "p90": pytest.approx(np.percentile(recent, 90)),
    }


def test_filling_the_window_allocates_nothing() -> None:
    """A months-long stream's memory must not grow while its windows fill: the ring is reserved when made."""
    latencies = Latencies(window=4096)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for k in range(4096):
            latencies.append(k * 1e-3)
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 4096  # bytes: a deque of 4096 Python floats would hold about 130 kB more
    assert latencies.recent()[-1] == pytest.approx(4.095)
