"""Each stream's state (running, reconnecting, ended), reconnections, time down and write errors in `/metrics`,
`/stats` and the page, for a list of streams that changes while the view serves."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.liveview import LiveView
from tests.runtime.liveview.helpers import add_stream, ask, camera, fake_run, mjpeg_frame


def _samples(view: LiveView, family: str) -> dict[tuple[str, ...], float]:
    """`family`'s samples by their label values (in label order)."""
    text = ask(view.url + "metrics")[1].decode()
    found = {f.name: f for f in text_string_to_metric_families(text)}[family]
    return {tuple(s.labels.values()): s.value for s in found.samples}


def test_metrics_and_stats_carry_each_streams_state(view: LiveView) -> None:
    view.attach(
        fake_run(
            camera("gate", reconnects=2, down_seconds=3.5, write_errors={"disk_full": 1}),
            camera("yard", state="reconnecting", reconnects=5, down_seconds=12.25),
        )
    )
    assert _samples(view, "cfnet_stream_up") == {("gate",): 1, ("yard",): 0}
    assert _samples(view, "cfnet_stream_reconnects") == {("gate",): 2, ("yard",): 5}
    assert _samples(view, "cfnet_stream_down_seconds") == {("gate",): 3.5, ("yard",): 12.25}
    assert _samples(view, "cfnet_write_errors") == {
        ("gate", "disk_full"): 1, ("gate", "io"): 0, ("yard", "disk_full"): 0, ("yard", "io"): 0
    }  # fmt: skip
    streams = json.loads(ask(view.url + "stats")[1])["streams"]
    assert [(s["name"], s["state"], s["reconnects"], s["down_seconds"]) for s in streams] == [
        ("gate", "running", 2, 3.5), ("yard", "reconnecting", 5, 12.25)
    ]  # fmt: skip
    page = ask(view.url)[1].decode()
    assert '<figure id="f1" class="reconnecting">' in page and '<span id="st1">reconnecting</span>' in page


def test_the_views_follow_streams_added_and_removed(view: LiveView) -> None:
    run = fake_run(camera("gate"))
    view.attach(run)
    assert "/stream/1.mjpg" not in ask(view.url)[1].decode()
    assert ask(view.url + "stream/1.mjpg")[0] == 404
    add_stream(run, camera("door"))
    run.latest[1] = np.full((48, 64, 3), (142, 0, 0), np.uint8)
    page = ask(view.url)[1].decode()
    assert "/stream/1.mjpg" in page and "<figcaption>door " in page
    assert mjpeg_frame(view.url + "stream/1.mjpg").shape == (48, 64, 3)
    assert [s["name"] for s in json.loads(ask(view.url + "stats")[1])["streams"]] == ["gate", "door"]
    assert _samples(view, "cfnet_frames") == {("gate",): 0, ("door",): 0}
    run.streams[0].state = "ended"  # removed: it stays in the list, ended
    assert _samples(view, "cfnet_stream_up") == {("gate",): 0, ("door",): 1}
    assert '<figure id="f0" class="ended">' in ask(view.url)[1].decode()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow  # acceptance: a real headless Chromium runs the page's script
def test_an_open_page_shows_a_stream_added_and_a_state_changed(view: LiveView, tmp_path: Path) -> None:
    assert CHROMIUM, "Debian's chromium is needed (make test installs it)"
    run = fake_run(camera("gate"))
    view.attach(run)
    served: list[str] = []  # pages a browser got before a change: each is served once, then the current one
    view.page = lambda: served.pop() if served else LiveView.page(view)  # type: ignore[method-assign]

    def dom() -> str:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--timeout=3000", "--dump-dom", view.url],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout

    served.append(LiveView.page(view))  # one tile
    add_stream(run, camera("door", state="reconnecting"))
    run.latest[:] = [np.zeros((48, 64, 3), np.uint8)] * 2
    shown = dom()
    assert '<figure id="f1" class="reconnecting">' in shown and "/stream/1.mjpg" in shown  # reloaded: two tiles
    served.append(LiveView.page(view))  # door reconnecting
    run.streams[1].state = "running"
    shown = dom()
    assert '<figure id="f1" class="running">' in shown and '<span id="st1">running</span>' in shown
