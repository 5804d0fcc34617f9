"""`LiveView`: the server bound to an address, observing a run's `RunStats`."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

from runtime.errors import UserError
from runtime.liveview.handler import Handler
from runtime.liveview.metrics import render_metrics
from runtime.liveview.page import render_page
from runtime.stream import RunStats
from runtime.video import stream_names


def parse_address(text: str) -> tuple[str, int]:
    """`--serve`: `PORT` or `HOST:PORT` (host 127.0.0.1 unless given; `[::1]:PORT` for IPv6)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected PORT or HOST:PORT, got '{text}'")
    return host or "127.0.0.1", int(port)


def bind_address(
    address: tuple[str, int], token: str | None, insecure: bool = False
) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The family and socket address that `address` binds (a host name resolved, IPv4 first), refused beyond
    loopback without a `token` unless `insecure`: a page, MJPEG and metrics open to the network must be asked for.
    """
    host, port = address
    where = f"--serve {_host_port(host, port)}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UserError(f"cannot serve the live view: {exc.strerror or exc}", where) from None
    family, *_, sockaddr = min(found, key=lambda info: info[0] != socket.AF_INET)
    if not token and not insecure and not ipaddress.ip_address(sockaddr[0]).is_loopback:
        what = "the live view would be open to the network without a token"
        raise UserError(f"{what}: give --serve-token (or --serve-insecure to serve without one)", where)
    return family, sockaddr


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Server(ThreadingHTTPServer):
    """A thread per connection; a viewer that leaves or stops reading is nothing to report."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silent for a connection the client reset or abandoned; any other exception is a bug, printed."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class LiveView:
    """An HTTP server observing a stream run; a context manager (the server stops with the block).

    Bound at construction (a busy port fails before the stream starts); `attach(run)` hands it the run's
    live `RunStats` (`run_streams(..., on_start=view.attach)`). A `token`, if given, is required on every
    request (`?token=` or `Authorization: Bearer`; compared as UTF-8 bytes); without one, an address beyond
    loopback is refused unless `insecure`. `max_fps` caps the frames each MJPEG viewer gets.
    """

    def __init__(
        self,
        address: tuple[str, int],
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        *,
        token: str | None = None,
        insecure: bool = False,
        quality: int = 80,
        max_fps: float = 10.0,
    ) -> None:
        family, sockaddr = bind_address(address, token, insecure)
        self.classes = list(classes)
        self.palette = [tuple(int(v) for v in c) for c in palette]
        self.token_bytes = token.encode("utf-8", "surrogateescape") if token else b""  # as argv gave it
        self.quality = quality
        self.interval = 1.0 / max_fps
        self.run: RunStats | None = None
        self.closed = threading.Event()
        self._encoded: dict[int, tuple[np.ndarray, bytes]] = {}  # stream -> (overlay, its JPEG)
        self._lock = threading.Lock()
        handler = type("Handler", (Handler,), {"view": self})
        server_class = _Server6 if family == socket.AF_INET6 else _Server
        self.server = server_class(sockaddr, handler, bind_and_activate=False)
        try:
            self.server.server_bind()
            self.server.server_activate()
        except OSError as exc:
            self.server.server_close()
            where = f"--serve {_host_port(*address)}"
            raise UserError(f"cannot serve the live view: {exc.strerror or exc}", where) from None
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{_host_port(str(self.server.server_address[0]), int(self.server.server_address[1]))}/"

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
        """Each stream's `name` (stable across reconnects); where a run has none, the unique one `--out DIR` gives
        the stream's file (two sources may share a name). Streams join the run's list, never leave it."""
        streams = list(self.run.streams) if self.run is not None else []
        fallback = stream_names([s.source for s in streams])
        return [s.name or name for s, name in zip(streams, fallback, strict=True)]

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
        stats = self.stats()  # before the names: a stream that joins in between is left out of this scrape
        return render_metrics(self.names, stats, self.run.times if self.run is not None else [])

    def page(self) -> str:
        """The HTML page: an image per stream, its state and figures (refreshed from `/stats`), the class legend."""
        streams = list(self.run.streams) if self.run is not None else []
        named = list(zip(self.names, (s.state for s in streams), strict=False))
        return render_page(named, self.classes, self.palette, self.token_bytes)
