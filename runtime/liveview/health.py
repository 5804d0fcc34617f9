"""`/healthz`: whether the run's inference advances, for systemd watchdogs and Kubernetes probes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from runtime.stream import RunStats


def health(run: RunStats | None, names: Sequence[str], detail: bool) -> tuple[HTTPStatus, dict[str, Any]]:
    """200 `{"status": "ok"}` while the last inference batch is at most the run's stall timeout old (before the
    first, while the run is that young); else 503 with `status` (starting, stalled, ended) and the `reason`.
    With `detail` (the request may see the run) the body adds each stream's state by name."""
    if run is None or run.started is None:
        return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "starting", "reason": "the run has not started"}
    if run.ended_by != "running":
        return HTTPStatus.SERVICE_UNAVAILABLE, {"status": "ended", "reason": f"the run ended ({run.ended_by})"}
    streams = {"streams": {n: s.state for n, s in zip(names, list(run.streams), strict=False)}} if detail else {}
    if run.last_progress is not None:
        since, what = time.monotonic() - run.last_progress, "inference has not advanced"
    else:
        since, what = time.perf_counter() - run.started, "no frame has been inferred"
    if since <= run.stall_timeout:
        return HTTPStatus.OK, {"status": "ok", **streams}
    reason = f"{what} for {since:.1f} s (stall timeout {run.stall_timeout:g} s)"
    body = {"status": "stalled", "reason": reason, "seconds_since_progress": round(since, 3)}
    return HTTPStatus.SERVICE_UNAVAILABLE, {**body, **streams}
