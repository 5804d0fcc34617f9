"""The live view's HTTP server on its own: page, MJPEG, /stats, /metrics, token, slow viewers, a busy port."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.errors import UserError
from runtime.liveview import BOUNDARY, LiveView, parse_address

CLASSES = ["road", "car"]
PALETTE = [[128, 64, 128], [0, 0, 142]]


def _stats() -> dict:
    return {
        "streams": [
            {"name": "cam0", "frames": 5, "dropped": 1, "fps": 12.5, "latency_ms": {"infer": {"median": 3, "p90": 4}}},
            {"name": "cam1", "frames": 3, "dropped": 0, "fps": 9.0, "latency_ms": {}},
        ],
        "aggregate": {"batch_sizes": {"1": 2, "2": 3}},
    }


def _samples() -> dict:
    return {"cam0": {"infer": [0.002, 0.004, 0.2]}, "cam1": {"infer": []}}


@pytest.fixture
def view() -> Iterator[LiveView]:
    with LiveView(("127.0.0.1", 0), ["cam0", "cam1"], CLASSES, PALETTE, _stats, _samples, max_fps=100) as v:
        yield v


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _mjpeg_frames(url: str, count: int) -> list[np.ndarray]:
    """Read `count` JPEG parts of a multipart MJPEG response and decode them."""
    frames = []
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        while len(frames) < count:
            assert r.readline().strip() == f"--{BOUNDARY}".encode()
            headers = {}
            while (line := r.readline().strip()) != b"":
                key, _, value = line.decode().partition(":")
                headers[key.lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            data = r.read(int(headers["content-length"]))
            r.readline()
            frames.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    return frames


def test_parse_address() -> None:
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:81") == ("0.0.0.0", 81)
    assert parse_address("[::1]:82") == ("::1", 82)
    with pytest.raises(ValueError):
        parse_address("host:http")


def test_page_stats_and_metrics(view: LiveView) -> None:
    status, body = _get(view.url)
    page = body.decode()
    assert status == 200 and "/stream/0.mjpg" in page and "/stream/1.mjpg" in page
    assert "rgb(0,0,142)" in page and "car" in page  # the legend
    assert json.loads(_get(view.url + "stats")[1]) == _stats()
    families = {f.name: f for f in text_string_to_metric_families(_get(view.url + "metrics")[1].decode())}
    frames = {s.labels["stream"]: s.value for s in families["cfnet_frames"].samples}
    assert frames == {"cam0": 5, "cam1": 3}
    assert {s.labels["stream"]: s.value for s in families["cfnet_dropped_frames"].samples}["cam0"] == 1
    buckets = {
        s.labels["le"]: s.value
        for s in families["cfnet_stage_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["stream"] == "cam0"
    }
    assert buckets["0.0025"] == 1 and buckets["0.005"] == 2 and buckets["+Inf"] == 3
    batch = {s.labels["le"]: s.value for s in families["cfnet_batch_size"].samples if s.name.endswith("_bucket")}
    assert batch == {"1": 2, "2": 5, "+Inf": 5}
    assert _get(view.url + "nothing")[0] == 404
    assert _get(view.url + "stream/7.mjpg")[0] == 404


def test_no_write_endpoints(view: LiveView) -> None:
    request = urllib.request.Request(view.url + "stats", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 501


def test_mjpeg_serves_the_newest_overlay(view: LiveView) -> None:
    red = np.zeros((24, 32, 3), np.uint8)
    red[..., 2] = 255
    view.publish(1, red)
    first = _mjpeg_frames(view.url + "stream/1.mjpg", 1)[0]
    assert first.shape == (24, 32, 3) and first[..., 2].mean() > 240 and first[..., 0].mean() < 15

    got: list[np.ndarray] = []
    reader = threading.Thread(target=lambda: got.extend(_mjpeg_frames(view.url + "stream/1.mjpg", 2)))
    reader.start()
    time.sleep(0.3)
    blue = np.zeros_like(red)
    blue[..., 0] = 255
    view.publish(1, blue)
    reader.join(timeout=10)
    assert len(got) == 2 and got[1][..., 0].mean() > 240


def test_a_viewer_that_never_reads_does_not_block_publishing(view: LiveView) -> None:
    big = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)  # JPEG that fills buffers
    host, port = view.server.server_address[:2]
    stalled = socket.create_connection((host, port), timeout=5)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream/0.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
    try:
        started = time.monotonic()
        for i in range(200):
            big[0, 0, 0] = i
            view.publish(0, big.copy())
        assert time.monotonic() - started < 2.0  # 200 publishes are reference swaps, never waits on the viewer
        assert view.frames[0].seq == 200  # every publish counted
        assert _get(view.url + "stats")[0] == 200  # other viewers are still served
    finally:
        stalled.close()


def test_token_is_enforced() -> None:
    with LiveView(("127.0.0.1", 0), ["cam0"], CLASSES, PALETTE, _stats, _samples, token="s3cret") as view:
        for path in ("", "stats", "metrics", "stream/0.mjpg"):
            assert _get(view.url + path)[0] == 401
            assert _get(view.url + path + "?token=wrong")[0] == 401
        assert _get(view.url + "stats?token=s3cret")[0] == 200
        assert _get(view.url + "metrics", {"Authorization": "Bearer s3cret"})[0] == 200
        assert "/stream/0.mjpg?token=s3cret" in _get(view.url + "?token=s3cret")[1].decode()


def test_busy_port_is_one_clean_error(view: LiveView) -> None:
    port = view.server.server_address[1]
    with pytest.raises(UserError) as info:
        LiveView(("127.0.0.1", port), ["cam0"], CLASSES, PALETTE, _stats, _samples)
    assert "in use" in str(info.value) and f"--serve 127.0.0.1:{port}" in str(info.value)


def test_close_ends_open_mjpeg_connections() -> None:
    view = LiveView(("127.0.0.1", 0), ["cam0"], CLASSES, PALETTE, _stats, _samples).start()
    view.publish(0, np.zeros((8, 8, 3), np.uint8))
    with urllib.request.urlopen(view.url + "stream/0.mjpg", timeout=5) as r:
        r.readline()
        view.close()
        deadline = time.monotonic() + 5
        while r.read(4096) and time.monotonic() < deadline:
            pass
        assert time.monotonic() < deadline  # the server ended the response
    with pytest.raises(OSError):
        socket.create_connection(view.server.server_address[:2], timeout=1).close()
