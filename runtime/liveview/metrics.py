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
    family("cfnet_write_errors_total", "counter", "Failed writes of the stream's recording, masks or results, by kind.")
    for n, s in streams:
        errors = s["write_errors"]
        for kind in sorted({*WRITE_ERROR_KINDS, *errors}):
            series = f'cfnet_write_errors_total{{stream="{_label(n)}",kind="{_label(kind)}"}}'
            lines.append(f"{series} {int(errors.get(kind, 0))}")
    lines += _results(streams)
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


DRIFT_GAUGES = (  # (gauge, key of `DriftReading.as_dict()`, help)
    ("cfnet_drift_score", "score", "Drift score against the model's reference, 0..1: max(js, low_excess)."),
    ("cfnet_drift_js", "js", "Jensen-Shannon divergence (bits) of the window's class shares from the reference's."),
    ("cfnet_drift_low_confidence_share", "low_share", "Share of low-confidence pixels over the window."),
    ("cfnet_drift_low_excess", "low_excess", "Low-confidence share beyond the reference's, 0..1."),
    ("cfnet_drift_alerting", "alerting", "1 while the drift score has stayed above --drift-alert (an episode)."),
)


def _results(streams: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """`cfnet_class_share{stream,class}` (the newest frame's) and the drift gauges of the streams that have them
    (a model without `cfnet.reference` has none; a mask model no confidence figures)."""
    lines = []
    if any(s.get("shares") for _, s in streams):
        lines += ["# HELP cfnet_class_share Share of the newest frame's pixels per class.",
                  "# TYPE cfnet_class_share gauge"]  # fmt: skip
        for n, s in streams:
            for name, share in (s.get("shares") or {}).items():
                lines.append(f'cfnet_class_share{{stream="{_label(n)}",class="{_label(name)}"}} {float(share):.6g}')
    for gauge, key, text in DRIFT_GAUGES:
        values = [(n, s["drift"][key]) for n, s in streams if s.get("drift") and s["drift"].get(key) is not None]
        if values:
            lines += [f"# HELP {gauge} {text}", f"# TYPE {gauge} gauge"]
            lines += [f'{gauge}{{stream="{_label(n)}"}} {float(v):.6g}' for n, v in values]
    return lines


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
