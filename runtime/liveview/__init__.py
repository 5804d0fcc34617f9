"""A live view of running streams over HTTP, for boxes without a screen (`cfnet stream --serve`).

`/` is a page with each stream's newest overlay, state and figures, refreshing itself; `/stream/<i>.mjpg` the
newest overlay of stream i as MJPEG; `/stats` the figures as JSON; `/metrics` the Prometheus text format;
`/healthz` whether inference advances (for probes, without a token); `/streams` the control API that adds and
removes streams (only with a token). The view only reads the run's `RunStats` (the newest overlay per stream,
the counters, the latencies so far) and calls its `control`: the pipeline does nothing for it. Each MJPEG
viewer's own thread looks for a newer overlay at most `max_fps` times a second and encodes it once for all
viewers, so a slow or stalled viewer skips frames and never holds the pipeline.

`server` holds `LiveView` (binding, the run it observes, the JPEG cache), `handler` the HTTP routes and their
access rules, `control` the control API, `health` `/healthz`, `metrics` the Prometheus text, `page` the page.
"""

from __future__ import annotations

from runtime.liveview.handler import BOUNDARY
from runtime.liveview.server import LiveView, bind_address, parse_address

__all__ = ["BOUNDARY", "LiveView", "bind_address", "parse_address"]
