"""`/healthz`: 200 while inference advances, 503 with the reason as JSON when it has not for the stall timeout;
open to probes without a token, and then it tells nothing but the status."""

from __future__ import annotations

import json
import time
from typing import Any

from runtime.liveview import LiveView
from tests.runtime.helpers import CLASSES, PALETTE
from tests.runtime.liveview.helpers import ask, camera, fake_run


def _health(view: LiveView, headers: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    status, body = ask(view.url + "healthz", headers)
    assert body.endswith(b"\n") and body.count(b"\n") == 1  # one line
    return status, json.loads(body)


def test_healthy_while_inference_advances(view: LiveView) -> None:
    view.attach(fake_run(camera("gate"), camera("yard", state="reconnecting")))
    assert _health(view) == (200, {"status": "ok", "streams": {"gate": "running", "yard": "reconnecting"}})


def test_stalled_after_the_stall_timeout(view: LiveView) -> None:
    run = fake_run(camera("gate"))
    run.stall_timeout = 5.0
    run.last_progress = time.monotonic() - 7.5
    view.attach(run)
    status, body = _health(view)
    assert status == 503 and body["status"] == "stalled"
    assert 7.5 <= body["seconds_since_progress"] < 60
    assert "5 s" in body["reason"] and "inference" in body["reason"]
    assert body["streams"] == {"gate": "running"}


def test_before_the_first_batch_the_stall_timeout_counts_from_the_start(view: LiveView) -> None:
    run = fake_run(camera("gate"))
    run.last_progress = None
    view.attach(run)
    assert _health(view)[0] == 200
    run.started = time.perf_counter() - run.stall_timeout - 1
    status, body = _health(view)
    assert status == 503 and body["status"] == "stalled" and body["seconds_since_progress"] > run.stall_timeout


def test_not_started_and_ended_runs_are_unhealthy(view: LiveView) -> None:
    assert _health(view) == (503, {"status": "starting", "reason": "the run has not started"})
    run = fake_run(camera("gate"))
    run.ended_by = "end"
    view.attach(run)
    assert _health(view) == (503, {"status": "ended", "reason": "the run ended (end)"})


def test_open_without_the_token_and_then_it_tells_only_the_status() -> None:
    with LiveView(("127.0.0.1", 0), CLASSES, PALETTE, token="s3cret") as view:
        run = fake_run(camera("gate"))
        view.attach(run)
        assert _health(view) == (200, {"status": "ok"})
        assert _health(view, {"Authorization": "Bearer s3cret"}) == (
            200,
            {"status": "ok", "streams": {"gate": "running"}},
        )
        assert (
            ask(view.url + "healthz?token=s3cret")[1]
            == ask(view.url + "healthz", {"Authorization": "Bearer s3cret"})[1]
        )
        run.last_progress = time.monotonic() - 60
        status, body = _health(view)
        assert status == 503 and set(body) == {"status", "reason", "seconds_since_progress"}
        assert "gate" not in json.dumps(body)
        assert ask(view.url + "stats")[0] == 401  # the rest still needs the token
        assert ask(view.url + "healthz", method="POST", data=b"")[0] == 405
