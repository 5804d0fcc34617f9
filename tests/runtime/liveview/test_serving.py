"""The live view (`cfnet stream --serve`): a real stream observed over HTTP and by a real headless Chromium."""

from __future__ import annotations

import html
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import cv2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.liveview import LiveView, parse_address
from tests.runtime.helpers import CLASSES, PALETTE, synthetic_frames
from tests.runtime.liveview.helpers import (
    FRAMES,
    GATE,
    IPV6,
    SIZE,
    Run,
    address,
    ask,
    mjpeg_frame,
    palette_pixels,
)


def test_parse_address() -> None:
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:81") == ("0.0.0.0", 81)
    assert parse_address("[::1]:82") == ("::1", 82)
    with pytest.raises(ValueError):
        parse_address("host:http")


def test_stats_metrics_and_mjpeg_during_a_run_agree_with_the_summary(view: LiveView, run: Run) -> None:
    run.wait_for_gate()
    page = ask(view.url)[1].decode()
    assert "/stream/0.mjpg" in page and "/stream/1.mjpg" in page and "rgb(0,0,142)" in page  # tiles, legend
    status, body = ask(view.url + "stats")
    live = json.loads(body)
    assert status == 200 and [s["frames"] for s in live["streams"]] == [GATE, GATE]
    assert live["aggregate"]["ended_by"] == "running" and live["streams"][0]["latency_ms"]["infer"]["p90"] > 0
    families = {f.name: f for f in text_string_to_metric_families(ask(view.url + "metrics")[1].decode())}
    assert [s.value for s in families["cfnet_frames"].samples] == [GATE, GATE]
    # both sources are named "frames": the labels are unique, as Prometheus needs (`--out DIR` names them so too)
    assert [s.labels["stream"] for s in families["cfnet_frames"].samples] == ["frames", "frames-2"]
    queued = {(s.labels["stream"], s.labels["queue"]) for s in families["cfnet_queued_frames"].samples}
    assert queued == {(n, q) for n in ("frames", "frames-2") for q in ("batcher", "writer")}
    assert set(live["streams"][0]["queued"]) == {"batcher", "writer"}
    counts = [s for s in families["cfnet_stage_seconds"].samples if s.name.endswith("_count")]
    assert {s.labels["stage"] for s in counts} >= {"read", "infer", "end_to_end"}
    assert all(s.value == GATE for s in counts if s.labels["stage"] == "end_to_end")
    batches = {s.labels["le"]: s.value for s in families["cfnet_batch_size"].samples if s.name.endswith("_bucket")}
    assert batches["+Inf"] == sum(live["aggregate"]["batch_sizes"].values())

    frame = mjpeg_frame(view.url + "stream/1.mjpg")
    assert frame.shape == (*SIZE, 3) and palette_pixels(frame) > 0.9 * frame.shape[0] * frame.shape[1]
    assert ask(view.url + "stream/2.mjpg")[0] == 404
    assert ask(view.url + "nothing")[0] == 404
    assert ask(view.url + "stats", method="POST", data=b"{}")[0] == 405  # the views are read only
    assert ask(view.url + "stats", method="PUT", data=b"{}")[0] == 501  # a method no route takes

    result = run.finish()
    final = json.loads(ask(view.url + "stats")[1])
    assert final == json.loads(json.dumps(result.to_dict()))
    assert [s["frames"] for s in final["streams"]] == [FRAMES, FRAMES]


def test_a_viewer_that_never_reads_does_not_stall_the_stream(view: LiveView, run: Run) -> None:
    stalled = socket.create_connection(address(view), timeout=5)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stalled.sendall(b"GET /stream/0.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads a byte
    try:
        run.wait_for_gate()
        result = run.finish()
        assert [s.frames for s in result.streams] == [FRAMES, FRAMES]
        assert ask(view.url + "stats")[0] == 200  # other viewers are still served
    finally:
        stalled.close()


def test_token_is_enforced(tiny_onnx: Path) -> None:
    token = "s3&c ret"  # characters a URL and HTML must escape
    with LiveView(("127.0.0.1", 0), CLASSES, PALETTE, token=token) as view:
        run = Run(tiny_onnx, view, sources=1)
        try:
            run.wait_for_gate()
            for path in ("", "stats", "metrics", "stream/0.mjpg"):
                assert ask(view.url + path)[0] == 401
                assert ask(view.url + path + "?token=wrong")[0] == 401
            query = "?token=" + quote(token, safe="")
            assert ask(view.url + "stats" + query)[0] == 200
            assert ask(view.url + "metrics", {"Authorization": f"Bearer {token}"})[0] == 200
            page = ask(view.url + query)[1].decode()
            src = page.split('src="', 1)[1].split('"', 1)[0]  # as a browser reads the attribute
            assert mjpeg_frame(view.url + html.unescape(src).lstrip("/")).shape == (*SIZE, 3)
        finally:
            run.finish()


def test_close_ends_open_mjpeg_connections_and_frees_the_port(tiny_onnx: Path) -> None:
    view = LiveView(("127.0.0.1", 0), CLASSES, PALETTE).start()
    run = Run(tiny_onnx, view, sources=1)
    try:
        run.wait_for_gate()
        with urllib.request.urlopen(view.url + "stream/0.mjpg", timeout=5) as r:
            r.readline()
            view.close()
            deadline = time.monotonic() + 5
            while r.read(4096) and time.monotonic() < deadline:
                pass
            assert time.monotonic() < deadline  # the server ended the response
    finally:
        run.finish()
        view.close()
    with pytest.raises(OSError):
        socket.create_connection(address(view), timeout=1).close()


def test_jpeg_quality_is_applied(tiny_onnx: Path) -> None:
    sizes = {}
    for quality in (10, 95):
        with LiveView(("127.0.0.1", 0), CLASSES, PALETTE, quality=quality) as view:
            run = Run(tiny_onnx, view, sources=1)
            try:
                run.wait_for_gate()
                sizes[quality] = len(_get_part(view.url + "stream/0.mjpg"))
            finally:
                run.finish()
    assert sizes[10] < 0.8 * sizes[95]  # flat overlays (alpha 1): 844 against 1178 bytes


def _get_part(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        r.readline()
        length = next(int(line.split(b":")[1]) for line in iter(r.readline, b"\r\n") if line.startswith(b"Content-L"))
        return r.read(length)


@pytest.mark.parametrize(
    ("serve", "url"),
    [
        (["--serve", "0"], "http://127.0.0.1:"),
        pytest.param(["--serve", "[::1]:0"], "http://[::1]:", marks=IPV6),
        (["--serve", "0.0.0.0:0", "--serve-insecure"], "http://0.0.0.0:"),
    ],
)
def test_the_stream_command_serves_while_it_runs(
    tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path], serve: list[str], url: str
) -> None:
    video = write_video(tmp_path / "v.mp4", synthetic_frames(8))
    done = subprocess.run(
        [sys.executable, "-m", "cfnet", "stream", str(video), "--model", str(tiny_onnx),
         "--out", str(tmp_path / "o.mp4"), *serve, "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"live view: {url}")
    assert json.loads(done.stdout)["aggregate"]["frames"] == 8


def test_busy_port_is_one_line_and_exit_2(
    tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path], capfd: pytest.CaptureFixture[str]
) -> None:
    video = write_video(tmp_path / "v.mp4", synthetic_frames(3))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "cfnet", "stream", str(video), "--model", str(tiny_onnx),
             "--out", str(tmp_path / "o.mp4"), "--serve", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: cannot serve the live view: Address already in use (--serve 127.0.0.1:{port})"
    ]
    assert list(tmp_path.iterdir()) == [video]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow  # acceptance: a real headless Chromium
def test_a_headless_browser_shows_the_live_overlay(view: LiveView, run: Run, tmp_path: Path) -> None:
    assert CHROMIUM, "Debian's chromium is needed (make test installs it)"
    run.wait_for_gate()
    shot = tmp_path / "page.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=800,600", "--timeout=3000",
         f"--screenshot={shot}", view.url],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    image = cv2.imread(str(shot))
    assert image is not None
    # both overlays (alpha 1: pure palette colours) are on the page, far more than the legend's swatches
    assert palette_pixels(image) > 1.5 * SIZE[0] * SIZE[1]
