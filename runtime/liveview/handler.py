"""The live view's HTTP routes: the page, MJPEG, `/stats`, `/metrics`, `/healthz` and the control API."""

from __future__ import annotations

import hmac
import json
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from runtime.liveview.control import MAX_BODY, add_stream, list_streams, remove_stream
from runtime.liveview.health import health

BOUNDARY = "cfnetframe"
SOCKET_TIMEOUT = 10.0  # seconds a viewer may leave a write unread before its connection is dropped
REPEAT_S = 0.5  # an unchanged overlay is sent again this often (a paused or ended stream stays visible)
MJPEG = re.compile(r"/stream/([0-9]{1,9})\.mjpg")


class Handler(BaseHTTPRequestHandler):
    """GET and HEAD of the views; `/healthz` needs no token; the control API (`/streams`) answers in JSON, only
    with a token set and given as a Bearer header. A method a route does not take is a 405, one that no route
    takes a 501 (`http.server`); a POST or DELETE is answered with `Connection: close`."""

    view: Any  # the LiveView serving this request (server.py builds its handler class with it)
    api = False  # the request is the control API's: errors in JSON
    protocol_version = "HTTP/1.1"
    server_version = "cfnet-live"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(SOCKET_TIMEOUT)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        """Quiet: requests are not logged to stderr (the stream's own output stays readable)."""

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_DELETE(self) -> None:
        self._route()

    def _route(self) -> None:
        self.api = False  # a kept-alive connection's handler answers its next request too
        if self.command not in ("GET", "HEAD"):
            self.close_connection = True  # a body this answer leaves unread must not be read as the next request
        if not self.path.isascii():  # http.server decodes the request line as latin-1: a raw byte beyond ASCII
            self._error(HTTPStatus.BAD_REQUEST, "percent-encode the URL")
            return
        url = urlsplit(self.path)
        path = url.path
        if path == "/streams" or path.startswith("/streams/"):
            self.api = True
            self._control(path)
            return
        if path == "/healthz":
            if self._allows("GET", "HEAD"):
                self._json(*health(self.view.run, self.view.names, detail=self._authorised(url.query)))
            return
        if not self._authorised(url.query):
            self._error(HTTPStatus.UNAUTHORIZED, "token required")
            return
        if path in ("/", "/stats", "/metrics") or MJPEG.fullmatch(path):
            if self._allows("GET", "HEAD"):
                self._view(path)
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    def _view(self, path: str) -> None:
        """The page, `/stats`, `/metrics`, or a stream's MJPEG."""
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
                self._error(HTTPStatus.NOT_FOUND, "no such stream")

    def _control(self, path: str) -> None:
        """`GET`/`POST /streams`, `DELETE /streams/NAME` (the name percent-encoded UTF-8) over the run's control."""
        if not self.view.token_bytes:
            self._error(HTTPStatus.FORBIDDEN, "the control API is off: start the stream with --serve-token")
            return
        if not self._authorised("", header_only=True):  # a token in a URL ends up in logs and histories
            self._error(HTTPStatus.UNAUTHORIZED, "the control API needs the token as 'Authorization: Bearer TOKEN'")
            return
        name = None if path == "/streams" else path[len("/streams/") :]
        if not self._allows(*(("GET", "POST") if name is None else ("DELETE",))):
            return
        run = self.view.run
        if run is None or run.control is None:
            started = run is not None
            why = "this run takes no streams added or removed live" if started else "the run has not started"
            self._error(HTTPStatus.NOT_IMPLEMENTED if started else HTTPStatus.SERVICE_UNAVAILABLE, why)
        elif name is not None:
            try:
                self._json(*remove_stream(run.control, unquote(name, errors="strict")))
            except UnicodeDecodeError:
                self._error(HTTPStatus.BAD_REQUEST, "the stream's name is not percent-encoded UTF-8")
        elif self.command == "GET":
            self._json(*list_streams(run.control))
        elif (body := self._body()) is not None:
            self._json(*add_stream(run.control, body))

    def _body(self) -> bytes | None:
        """The request's body, of a declared length up to `MAX_BODY` bytes (else None: the 411 or 413 is sent)."""
        length = self.headers.get("Content-Length", "")
        if "Transfer-Encoding" in self.headers or not re.fullmatch("[0-9]+", length):
            self._error(HTTPStatus.LENGTH_REQUIRED, "a body with a Content-Length is needed")
            return None
        if len(length) > 9 or int(length) > MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
            return None
        return self.rfile.read(int(length))

    def _allows(self, *methods: str) -> bool:
        """Whether the route takes the request's method; if not, the 405 is sent."""
        if self.command in methods:
            return True
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", {"Allow": ", ".join(methods)})
        return False

    def _authorised(self, query: str, header_only: bool = False) -> bool:
        """No token set, or the request carries it: as `Authorization: Bearer` or (unless `header_only`) as
        `?token=`, compared as bytes (the header's as sent: http.server decodes headers as latin-1; the query's
        percent-decoded)."""
        token = self.view.token_bytes
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            given = header[7:].encode("latin-1")
        elif header_only:
            return False
        else:
            given = parse_qs(query, encoding="latin-1").get("token", [""])[0].encode("latin-1")
        return hmac.compare_digest(given, token)

    def _error(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        """A line of text, or for the control API `{"error": message}`."""
        if self.api:
            self._json(status, {"error": message}, headers)
        else:
            self._send(status, f"{message}\n".encode(), "text/plain; charset=utf-8", headers)

    def _json(self, status: HTTPStatus, body: Any, headers: dict[str, str] | None = None) -> None:
        """`body` as one JSON line."""
        self._send(status, (json.dumps(body) + "\n").encode(), "application/json", headers)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
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
