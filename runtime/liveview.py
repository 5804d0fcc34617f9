"""A read-only live view of running streams over HTTP, for boxes without a screen.

`/` is a page with each stream's newest overlay and its figures, refreshing itself; `/stream/<i>.mjpg` the
newest overlay of stream i as MJPEG; `/stats` the figures as JSON; `/metrics` the Prometheus text format.
Only GET and HEAD are answered. The view only reads the run's `RunStats` (the newest overlay per stream,
the counters, the latencies so far): the pipeline does nothing for it. Each MJPEG viewer's own thread looks
for a newer overlay at most `max_fps` times a second and encodes it once for all viewers, so a slow or
stalled viewer skips frames and never holds the pipeline.
"""

from __future__ import annotations

import hmac
import html
import json
import threading
import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import cv2
import numpy as np

from runtime.errors import UserError
from runtime.latency import BUCKETS
from runtime.stream import RunStats
from runtime.video import stream_names

BOUNDARY = "cfnetframe"
SOCKET_TIMEOUT = 10.0  # seconds a viewer may leave a write unread before its connection is dropped
REPEAT_S = 0.5  # an unchanged overlay is sent again this often (a paused or ended stream stays visible)


def parse_address(text: str) -> tuple[str, int]:
    """`--serve`: `PORT` or `HOST:PORT` (host 127.0.0.1 unless given; `[::1]:PORT` for IPv6)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected PORT or HOST:PORT, got '{text}'")
    return host or "127.0.0.1", int(port)


class LiveView:
    """An HTTP server observing a stream run; a context manager (the server stops with the block).

    Bound at construction (a busy port fails before the stream starts); `attach(run)` hands it the run's
    live `RunStats` (`run_streams(..., on_start=view.attach)`). A `token`, if given, is required on every
    request (`?token=` or `Authorization: Bearer`). `max_fps` caps the frames each MJPEG viewer gets.
    """

    def __init__(
        self,
        address: tuple[str, int],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        *,
        token: str | None = None,
        quality: int = 80,
        max_fps: float = 10.0,
    ) -> None:
        self.classes = list(classes)
        self.palette = [tuple(int(v) for v in c) for c in palette]
        self.token = token
        self.quality = quality
        self.interval = 1.0 / max_fps
        self.run: RunStats | None = None
        self.closed = threading.Event()
        self._encoded: dict[int, tuple[np.ndarray, bytes]] = {}  # stream -> (overlay, its JPEG)
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"view": self})
        self.server = ThreadingHTTPServer(address, handler, bind_and_activate=False)
        self.server.daemon_threads = True
        try:
            self.server.server_bind()
            self.server.server_activate()
        except OSError as exc:
            self.server.server_close()
            where = f"--serve {address[0]}:{address[1]}"
            raise UserError(f"cannot serve the live view: {exc.strerror or exc}", where) from None
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        host, port = str(self.server.server_address[0]), int(self.server.server_address[1])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def start(self) -> LiveView:
        self.thread.start()
        return self

    def attach(self, run: RunStats) -> None:
        """Observe `run` (read only: its summary, latencies and newest overlays)."""
        self.run = run

    def close(self) -> None:
        """Stop serving: open MJPEG connections end, the listening socket is closed."""
        self.closed.set()
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def names(self) -> list[str]:
        """A unique label per stream (as `--out DIR` names its files): two sources may share a name."""
        return stream_names([s.source for s in self.run.streams]) if self.run is not None else []

    def stats(self) -> dict[str, Any]:
        """The run's summary so far (`/stats`), the same dict as `cfnet stream --json` prints at the end."""
        return self.run.snapshot() if self.run is not None else {"streams": [], "aggregate": {}}

    def jpeg(self, stream: int) -> tuple[np.ndarray, bytes] | None:
        """The newest overlay of `stream` and its JPEG (encoded once, by the first viewer that asks)."""
        if self.run is None or stream >= len(self.run.latest):
            return None
        image = self.run.latest[stream]
        if image is None:
            return None
        with self._lock:
            cached = self._encoded.get(stream)
            if cached is None or cached[0] is not image:
                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    return None
                cached = self._encoded[stream] = (image, data.tobytes())
            return cached

    def metrics(self) -> str:
        """The figures in the Prometheus text exposition format (version 0.0.4)."""
        stats = self.stats()
        lines: list[str] = []

        def family(name: str, kind: str, text: str) -> None:
            lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])

        streams = list(zip(self.names, stats["streams"], strict=False))
        for name, key, text in (
            ("cfnet_frames_total", "frames", "Frames segmented."),
            ("cfnet_dropped_frames_total", "dropped", "Frames a live source dropped because inference lagged."),
        ):
            family(name, "counter", text)
            lines += [f'{name}{{stream="{_label(n)}"}} {int(s[key])}' for n, s in streams]
        family("cfnet_fps", "gauge", "End-to-end frames per second of the stream so far.")
        lines += [f'cfnet_fps{{stream="{_label(n)}"}} {float(s["fps"]):.6g}' for n, s in streams]
        family("cfnet_queued_frames", "gauge", "Frames waiting now, for a batch or for the stream's writer.")
        for n, s in streams:
            for queue_name, depth in s.get("queued", {}).items():
                lines.append(f'cfnet_queued_frames{{stream="{_label(n)}",queue="{queue_name}"}} {int(depth)}')
        family("cfnet_stage_seconds", "histogram", "Per-frame latency of each pipeline stage.")
        for (n, _), times in zip(streams, self.run.times if self.run is not None else [], strict=False):
            for stage, latencies in list(times.items()):
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

    def page(self) -> str:
        """The HTML page: an image per stream, its figures (refreshed from `/stats`), the class legend."""
        query = f"?token={quote(self.token, safe='')}" if self.token else ""
        tiles = "".join(
            f'<figure><img id="s{i}" src="{html.escape(f"/stream/{i}.mjpg{query}")}" alt="{html.escape(name)}">'
            f'<figcaption>{html.escape(name)}</figcaption><pre id="t{i}"></pre></figure>'
            for i, name in enumerate(self.names)
        )
        legend = "".join(
            f'<li><span style="background:rgb({r},{g},{b})"></span>{html.escape(name)}</li>'
            for name, (r, g, b) in zip(self.classes, self.palette, strict=False)
        )
        stats_url = json.dumps(f"/stats{query}").replace("<", "\\u003c")  # inside <script>
        return _PAGE.format(tiles=tiles, legend=legend, stats=stats_url)


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


class _Handler(BaseHTTPRequestHandler):
    """GET/HEAD only; every other method is refused by `http.server` itself (501)."""

    view: LiveView
    protocol_version = "HTTP/1.1"
    server_version = "cfnet-live"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(SOCKET_TIMEOUT)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        """Quiet: requests are not logged to stderr (the stream's own output stays readable)."""

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self._authorised(parse_qs(url.query).get("token", [""])[0]):
            self._send(HTTPStatus.UNAUTHORIZED, b"token required\n", "text/plain; charset=utf-8")
            return
        path = url.path
        if path == "/":
            self._send(HTTPStatus.OK, self.view.page().encode(), "text/html; charset=utf-8")
        elif path == "/stats":
            self._send(HTTPStatus.OK, json.dumps(self.view.stats()).encode(), "application/json")
        elif path == "/metrics":
            self._send(HTTPStatus.OK, self.view.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif path.startswith("/stream/") and path.endswith(".mjpg") and path[8:-5].isdigit():
            index = int(path[8:-5])
            if index < len(self.view.names):
                self._mjpeg(index)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"no such stream\n", "text/plain; charset=utf-8")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _authorised(self, query_token: str) -> bool:
        token = self.view.token
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else query_token
        return hmac.compare_digest(given.encode(), token.encode())

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _mjpeg(self, index: int) -> None:
        """Send the newest overlay whenever there is a newer one, at most `max_fps` a second, until closed."""
        view = self.view
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        sent: np.ndarray | None = None
        sent_at = 0.0
        try:
            self.wfile.write(f"--{BOUNDARY}\r\n".encode())
            while not view.closed.is_set():
                started = time.monotonic()
                current = view.jpeg(index)
                # a new overlay, or the same again after REPEAT_S: browsers show a part once the next one starts
                if current is not None and (current[0] is not sent or started - sent_at >= REPEAT_S):
                    (sent, data), sent_at = current, started
                    head = f"Content-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                    self.wfile.write(head + data + f"\r\n--{BOUNDARY}\r\n".encode())
                    self.wfile.flush()
                view.closed.wait(max(0.0, view.interval - (time.monotonic() - started)))
        except (OSError, ValueError):  # the viewer left, or stopped reading for SOCKET_TIMEOUT
            return


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cfnet live</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1em;background:#111;color:#eee}}
main{{display:flex;flex-wrap:wrap;gap:1em}} figure{{margin:0}} img{{max-width:640px;display:block;background:#222}}
pre{{font-size:12px;margin:.3em 0}} ul{{list-style:none;padding:0;columns:4}}
li span{{display:inline-block;width:1em;height:1em;margin-right:.4em;vertical-align:middle}}
</style></head>
<body><h1>cfnet live</h1><main>{tiles}</main><pre id="agg"></pre><h2>Classes</h2><ul>{legend}</ul>
<script>
const url = {stats};
function fmt(s) {{
  const lat = Object.entries(s.latency_ms || {{}})
    .map(([k, v]) => `${{k.padEnd(12)}} p50 ${{v.median.toFixed(1)}}  p90 ${{v.p90.toFixed(1)}} ms`).join("\\n");
  const rest = Object.entries(s).filter(([k, v]) => typeof v !== "object" || v === null)
    .map(([k, v]) => `${{k}}: ${{typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : v}}`).join("\\n");
  const queued = s.queued ? `\\nqueued: batcher ${{s.queued.batcher}}, writer ${{s.queued.writer}}` : "";
  return rest + queued + "\\n" + lat;
}}
async function refresh() {{
  try {{
    const stats = await (await fetch(url, {{cache: "no-store"}})).json();
    const a = stats.aggregate || {{}};
    const sizes = Object.entries(a.batch_sizes || {{}}).map(([k, v]) => `${{v}} x ${{k}}`).join(", ");
    document.getElementById("agg").textContent =
      `all streams: ${{a.frames}} frames, ${{(a.fps || 0).toFixed(1)}} frames/s; batches: ${{sizes || "none"}}`;
    (stats.streams || []).forEach((s, i) => {{
      const el = document.getElementById("t" + i); if (el) el.textContent = fmt(s);
    }});
  }} catch (e) {{}}
}}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
