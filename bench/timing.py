"""Latency measurement: warm-up, then backends interleaved round by round so that drift hits all alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """The per-call latencies (seconds) of one backend and their summary."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90))

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))


def interleaved(
    calls: Mapping[str, Callable[[], object]],
    warmup: int,
    iters: int,
    pause: float = 0.02,
    errors: dict[str, BaseException] | None = None,
) -> dict[str, Timing]:
    """Time each call `iters` times after `warmup` untimed rounds, one call of each per round.

    The order rotates every round so no backend always runs right after a given other one (caches,
    turbo states). An untimed `pause` (seconds) after each call lets the previous runtime's worker threads
    stop spinning (OpenMP and ONNX Runtime busy-wait for a while) before the next one is timed. Each call
    must be synchronous: a GPU call synchronises before returning. With `errors`, a call that raises leaves
    the rounds (its exception recorded there, no timing returned) and the others go on.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + iters):
        shift = round_index % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            if errors is not None and name in errors:
                continue
            start = time.perf_counter()
            try:
                calls[name]()
            except Exception as exc:
                if errors is None:
                    raise
                errors[name] = exc
                continue
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                samples[name].append(elapsed)
            if pause > 0:
                time.sleep(pause)
    return {name: Timing(tuple(values)) for name, values in samples.items() if not errors or name not in errors}
