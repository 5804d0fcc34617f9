"""Who may reach the live view and how: bad request lines, viewers that leave, binding beyond loopback, IPv6,
tokens beyond ASCII."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from runtime.errors import UserError
from runtime.liveview import LiveView
from tests.runtime.helpers import CLASSES, PALETTE, synthetic_frames
from tests.runtime.liveview.helpers import IPV6, address, ask, camera, fake_run, raw


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET /stream/\xb2.mjpg HTTP/1.1", b"400"),  # '\xb2' is '\u00b2' (superscript two): str.isdigit() says yes
        (b"GET /st\xc3\xa9ts HTTP/1.1", b"400"),  # raw UTF-8, not percent-encoded
        (b"GET /stream/" + b"9" * 5000 + b".mjpg HTTP/1.1", b"404"),  # beyond int()'s 4300 digits
    ],
)
def test_a_bad_path_is_an_answer_not_a_traceback(
    view: LiveView, line: bytes, status: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    view.attach(fake_run(camera("cam1")))
    answer = raw(view, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert ask(view.url + "stats")[0] == 200  # and the server goes on
    assert capfd.readouterr().err == ""


def test_a_viewer_that_leaves_mid_response_prints_nothing(view: LiveView, capfd: pytest.CaptureFixture[str]) -> None:
    run = fake_run(camera("cam1"))
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    snapshot = run.snapshot

    def slow_snapshot() -> dict[str, Any]:
        entered.set()  # the request is read: the answer is being made
        release.wait(5)
        return snapshot()

    run.snapshot = slow_snapshot  # type: ignore[method-assign]
    shutdown_request = view.server.shutdown_request

    def shutdown_and_tell(request: Any) -> None:
        shutdown_request(request)
        finished.set()

    view.server.shutdown_request = shutdown_and_tell  # type: ignore[method-assign]
    view.attach(run)
    conn = socket.create_connection(address(view), timeout=5)
    conn.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert entered.wait(5)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # a reset: the server's answer meets a closed connection
    release.set()
    assert finished.wait(5)
    assert capfd.readouterr().err == ""


def test_a_bind_beyond_loopback_needs_a_token_or_insecure() -> None:
    with pytest.raises(UserError) as info:
        LiveView(("0.0.0.0", 0), CLASSES, PALETTE)
    assert "--serve-token" in str(info.value) and "--serve-insecure" in str(info.value)
    assert "\n" not in str(info.value) and info.value.where == "--serve 0.0.0.0:0"
    for options in ({"token": "s3cret"}, {"insecure": True}):
        with LiveView(("0.0.0.0", 0), CLASSES, PALETTE, **options) as view:
            assert view.url.startswith("http://0.0.0.0:")
    with LiveView(("localhost", 0), CLASSES, PALETTE) as view:  # a name that resolves to loopback
        assert ask(view.url + "stats")[0] == 200


def test_the_stream_command_refuses_a_bind_beyond_loopback_without_a_token(
    tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path]
) -> None:
    video = write_video(tmp_path / "v.mp4", synthetic_frames(3))
    done = subprocess.run(
        [sys.executable, "-m", "cfnet", "stream", str(video), "--model", str(tiny_onnx),
         "--out", str(tmp_path / "o.mp4"), "--serve", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: the live view would be open to the network without a token: give --serve-token "
        "(or --serve-insecure to serve without one) (--serve 0.0.0.0:0)"
    ]
    assert list(tmp_path.iterdir()) == [video]


@IPV6
def test_ipv6_loopback_is_served() -> None:
    with LiveView(("::1", 0), CLASSES, PALETTE) as view:
        view.attach(fake_run(camera("cam1")))
        assert view.url.startswith("http://[::1]:")
        status, body = ask(view.url + "stats")
        assert status == 200 and b'"cam1"' in body
    with pytest.raises(UserError):
        LiveView(("::", 0), CLASSES, PALETTE)  # every IPv6 interface, no token


def test_a_token_beyond_ascii_is_the_same_in_the_query_and_the_header() -> None:
    token = "s\u00e9cret-\u79d8\u5bc6"
    with LiveView(("127.0.0.1", 0), CLASSES, PALETTE, token=token) as view:
        view.attach(fake_run(camera("cam1")))
        bearer = b"Bearer " + token.encode()  # as curl sends it: the UTF-8 bytes
        for path in ("stats", "metrics", ""):
            assert ask(view.url + path + "?token=" + quote(token, safe=""))[0] == 200
            assert ask(view.url + path, {"Authorization": bearer})[0] == 200
            assert ask(view.url + path, {"Authorization": b"Bearer " + token.encode()[:-1]})[0] == 401
            assert ask(view.url + path + "?token=" + quote(token[:-1], safe=""))[0] == 401
        assert ask(view.url + "stats", {"Authorization": b"bearer " + token.encode()})[0] == 200  # any case
