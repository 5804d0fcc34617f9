"""The live view's HTTP routes: the page, MJPEG, `/stats`, `/metrics`."""

from __future__ import annotations

import hmac
import json
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

if TYPE_CHECKING:
    from runtime.liveview.server import LiveView

BOUNDARY = "cfnetframe"
SOCKET_TIMEOUT = 10.0  # seconds a viewer may leave a write unread before its connection is dropped
REPEAT_S = 0.5  # an unchanged overlay is sent again this often (a paused or ended stream stays visible)
MJPEG = re.compile(r"/stream/([0-9]{1,9})\.mjpg")


class Handler(BaseHTTPRequestHandler):
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
        if not self.path.isascii():  # http.server decodes the request line as latin-1: a raw byte beyond ASCII
            self._send(HTTPStatus.BAD_REQUEST, b"percent-encode the URL\n", "text/plain; charset=utf-8")
            return
        url = urlsplit(self.path)
        if not self._authorised(url.query):
            self._send(HTTPStatus.UNAUTHORIZED, b"token required\n", "text/plain; charset=utf-8")
            return
        path = url.path
        if path == "/":
            self._send(HTTPStatus.OK, self.view.page().encode(), "text/html; charset=utf-8")
        elif path == "/stats":
            self._send(HTTPStatus.OK, json.dumps(self.view.stats()).encode(), "application/json")
        elif path == "/metrics":
            self._send(HTTPStatus.OK, self.view.metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif match := MJPEG.fullmatch(path):
            index = int(match[1])
            if index < len(self.view.names):
                self._mjpeg(index)
            else:
                self._send(HTTPStatus.NOT_FOUND, b"no such stream\n", "text/plain; charset=utf-8")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _authorised(self, query: str) -> bool:
        """No token set, or the request carries it: as `Authorization: Bearer` or as `?token=`, compared as
        bytes (the header's as sent: http.server decodes headers as latin-1; the query's percent-decoded)."""
        token = self.view.token_bytes
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            given = header[7:].encode("latin-1")
        else:
            given = parse_qs(query, encoding="latin-1").get("token", [""])[0].encode("latin-1")
        return hmac.compare_digest(given, token)

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
