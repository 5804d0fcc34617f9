"""The live view's `/metrics`: the run's figures in the Prometheus text exposition format (version 0.0.4).

Written by hand (a few lines) rather than with `prometheus_client`, which would be a runtime dependency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runtime.latency import BUCKETS, Latencies

WRITE_ERROR_KINDS = ("disk_full", "io")  # always exposed (0 until one happens), so that rate() sees the first


def render_metrics(names: Sequence[str], stats: Mapping[str, Any], times: Sequence[Mapping[str, Latencies]]) -> str:
    """The exposition text of a run's `snapshot()` (`stats`), its streams' `names` and stage latencies."""
    lines: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])

    streams = list(zip(names, stats["streams"], strict=False))
    for name, key, text in (
        ("cfnet_frames_total", "frames", "Frames segmented."),
        ("cfnet_dropped_frames_total", "dropped", "Frames a live source dropped because inference lagged."),
    ):
        family(name, "counter", text)
        lines += [f'{name}{{stream="{_label(n)}"}} {int(s[key])}' for n, s in streams]
    family("cfnet_stream_up", "gauge", "1 while the stream runs, 0 while it reconnects or once it ended.")
    lines += [f'cfnet_stream_up{{stream="{_label(n)}"}} {int(s["state"] == "running")}' for n, s in streams]
    family("cfnet_stream_reconnects_total", "counter", "Times the stream's source was reopened.")
    lines += [f'cfnet_stream_reconnects_total{{stream="{_label(n)}"}} {int(s["reconnects"])}' for n, s in streams]
    family("cfnet_stream_down_seconds_total", "counter", "Seconds the stream spent reconnecting.")
    lines += [
        f'cfnet_stream_down_seconds_total{{stream="{_label(n)}"}} {float(s["down_seconds"]):.9g}' for n, s in streams
    ]
    family("cfnet_write_errors_total", "counter", "Failed writes of the stream's recording or masks, by kind.")
    for n, s in streams:
        errors = s["write_errors"]
        for kind in sorted({*WRITE_ERROR_KINDS, *errors}):
            series = f'cfnet_write_errors_total{{stream="{_label(n)}",kind="{_label(kind)}"}}'
            lines.append(f"{series} {int(errors.get(kind, 0))}")
    family("cfnet_fps", "gauge", "End-to-end frames per second of the stream so far.")
    lines += [f'cfnet_fps{{stream="{_label(n)}"}} {float(s["fps"]):.6g}' for n, s in streams]
    family("cfnet_queued_frames", "gauge", "Frames waiting now, for a batch or for the stream's writer.")
    for n, s in streams:
        for queue_name, depth in s.get("queued", {}).items():
            lines.append(f'cfnet_queued_frames{{stream="{_label(n)}",queue="{queue_name}"}} {int(depth)}')
    family("cfnet_stage_seconds", "histogram", "Per-frame latency of each pipeline stage.")
    for (n, _), stages in zip(streams, times, strict=False):
        for stage, latencies in list(stages.items()):
            labels = {"stream": n, "stage": stage}
            lines += _histogram(
                "cfnet_stage_seconds", labels, BUCKETS, latencies.cumulative(), latencies.total, latencies.count
            )
    sizes = {int(size): int(count) for size, count in stats["aggregate"].get("batch_sizes", {}).items()}
    if sizes:
        family("cfnet_batch_size", "histogram", "Frames per inference batch.")
        bounds = sorted(sizes)
        counts = np.cumsum([sizes[b] for b in bounds]).tolist()
        total = float(sum(size * count for size, count in sizes.items()))
        lines += _histogram("cfnet_batch_size", {}, bounds, counts, total, counts[-1])
    return "\n".join(lines) + "\n"


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _histogram(
    name: str, labels: Mapping[str, Any], bounds: Sequence[float], cumulative: Sequence[int], total: float, count: int
) -> list[str]:
    """`_bucket` lines (`cumulative[i]` samples at most `bounds[i]`), `_sum` and `_count` (all samples) of a series."""
    base = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
    sep = "," if base else ""
    lines = [f'{name}_bucket{{{base}{sep}le="{bound:g}"}} {n}' for bound, n in zip(bounds, cumulative, strict=True)]
    lines.append(f'{name}_bucket{{{base}{sep}le="+Inf"}} {count}')
    suffix = f"{{{base}}}" if base else ""
    lines += [f"{name}_sum{suffix} {total:.9g}", f"{name}_count{suffix} {count}"]
    return lines
