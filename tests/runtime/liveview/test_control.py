"""The control API (`GET/POST /streams`, `DELETE /streams/NAME`): only with a token, as a Bearer header; a bad
request is one JSON line and stops nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.liveview import LiveView
from tests.runtime.helpers import CLASSES, PALETTE
from tests.runtime.liveview.helpers import FakeControl, address, ask, camera, fake_run, raw

TOKEN = "s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def guarded() -> Iterator[LiveView]:
    with LiveView(("127.0.0.1", 0), CLASSES, PALETTE, token=TOKEN) as view:
        yield view


def _attach(view: LiveView) -> FakeControl:
    run = fake_run(camera("gate"), camera("caf\u00e9"))
    run.control = FakeControl(run)
    view.attach(run)
    return run.control


def _call(view: LiveView, method: str, path: str, body: Any = None, **headers: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    status, answer = ask(view.url + path, {**BEARER, **headers}, method=method, data=data)
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1, answer  # one line
    return status, json.loads(answer)


def test_streams_are_listed_added_and_removed(guarded: LiveView) -> None:
    control = _attach(guarded)
    assert _call(guarded, "GET", "streams") == (200, {"streams": control.list()})
    status, body = _call(guarded, "POST", "streams", {"source": "rtsp://cams/door", "name": "door"})
    assert (status, body) == (202, {"name": "door", "source": "rtsp://cams/door"})
    assert _call(guarded, "POST", "streams", {"source": "rtsp://cams/back"})[1]["name"] == "cam4"  # named by it
    assert _call(guarded, "DELETE", "streams/caf%C3%A9") == (202, {"name": "caf\u00e9"})
    assert control.calls == [
        ("add", "rtsp://cams/door", "door"), ("add", "rtsp://cams/back", "cam4"), ("remove", "caf\u00e9")
    ]  # fmt: skip
    stats = json.loads(ask(guarded.url + "stats", BEARER)[1])
    assert {s["name"]: s["state"] for s in stats["streams"]} == {
        "gate": "running", "caf\u00e9": "ended", "door": "running", "cam4": "running"
    }  # fmt: skip


def test_the_control_api_is_off_without_a_token(view: LiveView) -> None:
    control = _attach(view)
    for method, path in (("GET", "streams"), ("POST", "streams"), ("DELETE", "streams/gate")):
        status, body = _call(view, method, path, {"source": "rtsp://cams/x"} if method == "POST" else None)
        assert status == 403 and "--serve-token" in body["error"]
    assert control.calls == []


def test_the_control_api_needs_the_token_as_a_bearer_header(guarded: LiveView) -> None:
    control = _attach(guarded)
    assert _call(guarded, "GET", "streams", Authorization="Bearer wrong")[0] == 401
    status, body = ask(guarded.url + f"streams?token={TOKEN}")  # a token in a URL ends up in logs
    assert status == 401 and "Bearer" in json.loads(body)["error"]
    assert ask(guarded.url + "streams", method="POST", data=b'{"source": "rtsp://cams/x"}')[0] == 401
    assert ask(guarded.url + "streams/gate", method="DELETE")[0] == 401
    assert control.calls == []


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{", 400, "not JSON"),
        (b"\xff", 400, "not JSON"),
        (b"[" * 16000, 400, "not JSON"),  # nested beyond the decoder's recursion limit
        (b"[]", 400, "a JSON object"),
        (b'{"name": "x"}', 400, "source"),
        (b'{"source": 5}', 400, "source"),
        (b'{"source": " "}', 400, "source"),
        (b'{"source": "rtsp://cams/x", "name": 5}', 400, "name"),
        (b'{"source": "rtsp://cams/x", "nmae": "x"}', 400, "nmae"),
        (b'{"source": "nothing://x"}', 400, "cannot open the source"),  # the control's UserError
        (b'{"source": "rtsp://cams/x", "name": "gate"}', 409, "gate"),  # a running stream's name
    ],
)
def test_a_bad_post_is_one_line_and_stops_nothing(guarded: LiveView, body: bytes, status: int, says: str) -> None:
    control = _attach(guarded)
    before = control.list()
    answer = _call(guarded, "POST", "streams", body)
    assert answer[0] == status and says in answer[1]["error"], answer
    assert control.list() == before and control.calls == []


def test_deleting_an_unknown_or_ended_stream(guarded: LiveView) -> None:
    control = _attach(guarded)
    assert _call(guarded, "DELETE", "streams/door") == (404, {"error": "unknown stream: door"})
    assert _call(guarded, "DELETE", "streams/%FF")[0] == 400  # not UTF-8
    assert _call(guarded, "DELETE", "streams/gate")[0] == 202
    status, body = _call(guarded, "DELETE", "streams/gate")  # the control refuses a stream already ended
    assert status == 409 and "unknown stream" in body["error"]
    assert control.calls == [("remove", "gate")]


def test_bodies_are_bounded_and_need_a_length(guarded: LiveView) -> None:
    control = _attach(guarded)
    head = f"POST /streams HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    answer = raw(guarded, f"{head}Content-Length: 100000000\r\n\r\n".encode())  # and no body follows
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer
    assert raw(guarded, f"{head}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode()).startswith(b"HTTP/1.1 411 ")
    assert control.calls == []


def test_methods_and_a_run_without_control(guarded: LiveView) -> None:
    assert _call(guarded, "GET", "streams")[0] == 503  # the run has not started
    guarded.attach(fake_run(camera("gate")))  # a run that takes no streams live
    status, body = _call(guarded, "POST", "streams", {"source": "rtsp://cams/x"})
    assert status == 501 and "live" in body["error"]
    _attach(guarded)
    assert _call(guarded, "DELETE", "streams")[0] == 405
    assert _call(guarded, "GET", "streams/gate")[0] == 405


def test_a_kept_alive_connection_answers_each_request_in_its_own_kind(guarded: LiveView) -> None:
    _attach(guarded)
    first = f"GET /streams HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    second = f"GET /nothing?token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = raw(guarded, (first + second).encode())
    assert answer.count(b"HTTP/1.1 ") == 2 and answer.endswith(b"\r\n\r\nnot found\n")  # text, not the API's JSON


README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readmes_curl_examples_run_as_written(guarded: LiveView) -> None:
    """Against a view with the README's token (`s3cret`) on a free port instead of 8080."""
    assert TOKEN == "s3cret"
    section = README.read_text().split("### Live view (`cfnet stream --serve`)", 1)[1].split("![", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("curl ")]
    control = _attach(guarded)
    host, port = address(guarded)
    said = []
    for line in lines:
        done = subprocess.run(
            ["bash", "-c", "set -o pipefail; " + line.replace("127.0.0.1:8080", f"{host}:{port}")],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        said.append(done.stdout)
    assert said[0].startswith("# HELP cfnet_frames_total ")  # the metrics line, piped through grep
    assert [json.loads(text) for text in said[1:]] == [
        {"status": "ok"},
        {"streams": [{"name": "gate", "source": "rtsp://cams/gate", "state": "running"},
                     {"name": "caf\u00e9", "source": "rtsp://cams/caf\u00e9", "state": "running"}]},
        {"name": "replay", "source": "demo/video.mp4"},
        {"name": "replay"},
    ]  # fmt: skip
    assert control.calls == [("add", "demo/video.mp4", "replay"), ("remove", "replay")]
