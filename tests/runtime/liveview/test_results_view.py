"""Results as data in the live view (issue 24): each stream's class shares as `cfnet_class_share{stream,class}`
and its drift figures as gauges in `/metrics`, both in `/stats`, from a run set by hand and from a real run."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime.liveview import LiveView
from tests.runtime.helpers import CLASSES
from tests.runtime.liveview.helpers import FRAMES, Run, ask, camera, fake_run

DRIFT = {"js": 0.25, "low_share": 0.4, "low_excess": 0.125, "score": 0.25, "alerting": True}


def _families(view: LiveView) -> dict[str, dict[tuple[str, ...], float]]:
    text = ask(view.url + "metrics")[1].decode()
    families = text_string_to_metric_families(text)
    return {f.name: {tuple(s.labels.values()): s.value for s in f.samples} for f in families}


def test_class_shares_and_drift_gauges_per_stream(view: LiveView) -> None:
    shares = {"road": 0.5, "car": 0.125, "sky": 0.375, "tree": 0.0}
    view.attach(fake_run(camera("gate", shares=shares, drift=DRIFT), camera("yard", shares={"road": 1.0})))
    families = _families(view)
    assert families["cfnet_class_share"] == {
        **{("gate", name): share for name, share in shares.items()}, ("yard", "road"): 1.0
    }  # fmt: skip
    assert families["cfnet_drift_score"] == {("gate",): 0.25}  # yard's model has no reference: no figures
    assert families["cfnet_drift_js"] == {("gate",): 0.25}
    assert families["cfnet_drift_low_confidence_share"] == {("gate",): 0.4}
    assert families["cfnet_drift_low_excess"] == {("gate",): 0.125}
    assert families["cfnet_drift_alerting"] == {("gate",): 1.0}
    streams = json.loads(ask(view.url + "stats")[1])["streams"]
    assert [(s["shares"], s["drift"]) for s in streams] == [(shares, DRIFT), ({"road": 1.0}, None)]


def test_a_mask_models_drift_has_no_confidence_gauges(view: LiveView) -> None:
    mask_only = {"js": 0.1, "low_share": None, "low_excess": None, "score": 0.1, "alerting": False}
    view.attach(fake_run(camera("gate", drift=mask_only)))
    families = _families(view)
    assert families["cfnet_drift_score"] == {("gate",): 0.1} and families["cfnet_drift_alerting"] == {("gate",): 0}
    assert "cfnet_drift_low_excess" not in families and "cfnet_class_share" not in families


def test_a_running_stream_reports_the_newest_frames_shares(view: LiveView, run: Run) -> None:
    run.wait_for_gate()
    shares = _families(view)["cfnet_class_share"]
    assert {stream for stream, _ in shares} == {"frames", "frames-2"}
    for stream in ("frames", "frames-2"):
        assert sorted(name for s, name in shares if s == stream) == sorted(CLASSES)
        assert sum(v for (s, _), v in shares.items() if s == stream) == pytest.approx(1, abs=1e-5)
    result = run.finish()
    assert [s.frames for s in result.streams] == [FRAMES, FRAMES]
    final = json.loads(ask(view.url + "stats")[1])["streams"]
    assert [s["shares"] for s in final] == [s.shares for s in result.streams]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow  # acceptance: a real headless Chromium runs the page's script
def test_the_page_shows_the_largest_classes_and_the_drift_score(view: LiveView, tmp_path: Path) -> None:
    assert CHROMIUM, "Debian's chromium is needed (make test installs it)"
    shares = {"road": 0.5, "car": 0.125, "sky": 0.375, "tree": 0.0}
    view.attach(fake_run(camera("gate", shares=shares, drift=DRIFT), camera("yard", shares={"road": 1.0})))
    shown = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--timeout=3000", "--dump-dom", view.url],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    gate = shown[shown.index('<pre id="t0">') : shown.index("</pre>", shown.index('<pre id="t0">'))]
    yard = shown[shown.index('<pre id="t1">') : shown.index("</pre>", shown.index('<pre id="t1">'))]
    assert "classes: road 50%, sky 38%, car 13%" in gate and "drift: 0.25 ALERT" in gate  # tree (0) left out
    assert "classes: road 100%" in yard and "drift" not in yard  # no reference: no drift line at all
