"""Camera checks that take minutes to days: run them on a quiet machine (docs/DESIGN.md, "Cameras for months").

soak    4 streams through one `cfnet stream` process: 3 video files looped and 1 RTSP camera (GStreamer's RTSP
        server on loopback) that drops every --drop-every s for --down-for s, recording --segment-seconds
        segments with --retain-gb. Samples the process's RSS, threads, file descriptors and the disk use of its
        output; at the end checks that the RSS after the first --warmup s grew < 3 % (its level: the median of
        each minute of samples, against the first minute's), threads and descriptors did not grow, the disk
        use stayed within the retention, and every retained segment plays whole.
outage  The same 4 streams twice: once without and once with an outage of the camera of --outage s. Prints the
        files' frames/s during the outage against the same window of the run without it (goal: within 5 %)
        and how long after the camera is back its frames flow again (goal: within --reconnect-max + 2 s).

    python scripts/cameras.py soak --model demo/models/cfnet-pspnet-fp32.onnx --minutes 30
    python scripts/cameras.py outage --model demo/models/cfnet-pspnet-fp32.onnx --outage 60

Needs /usr/bin/python3 with python3-gi and gir1.2-gst-rtsp-server-1.0 (`make test` installs them). Exits 1
when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RTSP_SERVER = ROOT / "tests" / "runtime" / "stream" / "rtsp_server.py"
sys.path.insert(0, str(ROOT))

from runtime.mp4 import sample_count  # noqa: E402


def synthetic_video(path: Path, frames: int, size: tuple[int, int], seed: int) -> Path:
    """Moving rectangles over a gradient, mp4v at 25 fps."""
    rng = np.random.default_rng(seed)
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (w, h))
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    for i in range(frames):
        frame = base.copy()
        x = (i * 5) % max(1, w - w // 4)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(frame, (x, h // 4), (x + w // 4, h // 2), colour, -1)
        writer.write(frame)
    writer.release()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Camera:
    """The RTSP camera, a process started, killed (by pid) and started again on the same port."""

    def __init__(self, clip: Path) -> None:
        self.clip, self.port = clip, free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> float:
        """Start it; returns the monotonic time it listens."""
        cmd = ["/usr/bin/python3", str(RTSP_SERVER), "--port", str(self.port), "--video", str(self.clip)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            sys.exit("error: the RTSP camera did not start (is gir1.2-gst-rtsp-server-1.0 installed?)")
        return time.monotonic()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class Run:
    """`cfnet stream FILES... CAMERA` with a live view on loopback (its /stats is read while it runs)."""

    def __init__(self, files: list[Path], camera: Camera, model: str, out: Path, extra: list[str]) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "cfnet", "stream", *map(str, files), camera.url, "--model", model]
        cmd += ["--out", str(out), "--loop", "--serve", f"127.0.0.1:{self.port}", "--log-format", "json", "--json"]
        self.log = open(out.parent / "stream.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(cmd + extra, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if all(s["frames"] > 0 for s in self.stats()["streams"]):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"error: cfnet stream did not start streaming (see {self.log.name})")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as response:
            return dict(json.load(response))

    def frames(self) -> list[int]:
        return [int(s["frames"]) for s in self.stats()["streams"]]

    def sample(self) -> dict[str, float]:
        """RSS (MB), threads and file descriptors of the process now."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        field = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        fds = len(os.listdir(f"/proc/{self.process.pid}/fd"))
        return {"rss_mb": int(field["VmRSS"].split()[0]) / 1024, "threads": int(field["Threads"]), "fds": fds}

    def stop(self) -> dict[str, Any] | None:
        """SIGTERM (by pid); the summary it printed, or None."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        stdout, _ = self.process.communicate(timeout=120)
        self.log.close()
        try:
            return dict(json.loads(stdout)) if self.process.returncode == 0 else None
        except json.JSONDecodeError:
            return None


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def setup(work: Path, size: tuple[int, int]) -> tuple[list[Path], Camera]:
    files = [synthetic_video(work / f"file{k}.mp4", 250, size, seed=k) for k in range(3)]
    return files, Camera(synthetic_video(work / "camera.mp4", 100, size, seed=9))


def check(name: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return ok


def soak(args: argparse.Namespace, work: Path) -> bool:
    files, camera = setup(work, args.size)
    out = work / "out"
    camera.start()
    extra = ["--segment-seconds", str(args.segment_seconds), "--retain-gb", str(args.retain_gb)]
    run = Run(files, camera, args.model, out, extra + ["--reconnect-max", str(args.reconnect_max)])
    started = time.monotonic()
    samples: list[dict[str, float]] = []
    next_drop, down_until = started + args.drop_every, 0.0
    try:
        while (now := time.monotonic()) < started + args.minutes * 60:
            if camera.process is None and now >= down_until:
                camera.start()
            elif camera.process is not None and now >= next_drop:
                camera.kill()
                down_until, next_drop = now + args.down_for, next_drop + args.drop_every
            sample = run.sample()
            state = run.stats()["streams"][3]["state"]
            samples.append({**sample, "t": now - started, "disk": disk_bytes(out), "up": state == "running"})
            if args.samples is not None:
                with open(args.samples, "a") as series:
                    series.write(json.dumps(samples[-1]) + "\n")
            time.sleep(args.every)
    finally:
        summary = run.stop()
        camera.kill()
    return report_soak(args, out, samples, summary)


def report_soak(args: argparse.Namespace, out: Path, samples: list[dict[str, Any]], summary: Any) -> bool:
    settled = [s for s in samples if s["t"] >= args.warmup]
    if not settled or summary is None:
        return check("run", False, "too short a soak, or cfnet stream did not end with its summary")
    up = [s for s in settled if s["up"]]
    half = len(up) // 2 or 1
    levels = rss_levels(settled, args.every)
    base, top = levels[0], max(levels)
    growth = (top - base) / base
    retain = args.retain_gb * 1e9
    segments = sorted(out.rglob("*.mp4"))
    largest = max((p.stat().st_size for p in segments), default=0)
    bad = [p for p in segments if not (sample_count(p) or 0) or sample_count(p) != _decoded(p)]
    cam = summary["streams"][3]
    print(
        f"{len(samples)} samples over {samples[-1]['t'] / 60:.1f} min; camera: {cam['reconnects']} reconnects, "
        f"{cam['down_seconds']:.0f} s down; {sum(s['frames'] for s in summary['streams'])} frames"
    )
    results = [
        check(
            "RSS",
            growth < 0.03,
            f"{base:.1f} MB over the minute after {args.warmup:.0f} s, at most {top:.1f} MB over any later minute "
            f"({growth:+.1%}, goal < +3%); single samples {min(s['rss_mb'] for s in settled):.0f}.."
            f"{max(s['rss_mb'] for s in settled):.0f} MB",
        ),
        *[
            check(
                key,
                max(s[key] for s in up[half:]) <= max(s[key] for s in up[:half]),
                f"{min(s[key] for s in up)}..{max(s[key] for s in up)} while the camera is up, no growth",
            )
            for key in ("threads", "fds")
        ],
        check(
            "disk",
            max(s["disk"] for s in settled) <= retain + 4 * largest,
            f"at most {max(s['disk'] for s in settled) / 1e6:.1f} MB, bound {retain / 1e6:.0f} MB retained + "
            f"4 segments being written ({4 * largest / 1e6:.1f} MB)",
        ),
        check("segments", not bad and bool(segments), f"{len(segments)} retained, {len(bad)} unplayable {bad[:3]}"),
        check(
            "camera",
            cam["reconnects"] >= 1 and all(s["ended_by"] == "terminated" for s in summary["streams"]),
            f"reconnected {cam['reconnects']} times; every stream ran until SIGTERM",
        ),
    ]
    return all(results)


def rss_levels(samples: list[dict[str, Any]], every: float) -> list[float]:
    """RSS (MB) over each minute of `samples` (a median over every run of a minute's samples): growth is a level
    that rises and stays, not one sample taken while a camera reconnects or a segment rolls over."""
    window = max(1, round(60 / every))
    rss = [s["rss_mb"] for s in samples]
    return [statistics.median(rss[k : k + window]) for k in range(max(1, len(rss) - window + 1))]


def _decoded(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def outage(args: argparse.Namespace, work: Path) -> bool:
    files, camera = setup(work, args.size)
    rates = []
    recovery = None
    for with_outage in (False, True):
        out = work / f"out-{int(with_outage)}"
        out.mkdir()
        camera.start()
        run = Run(files, camera, args.model, out, ["--reconnect-max", str(args.reconnect_max)])
        try:
            time.sleep(args.warmup)
            before, start = run.frames(), time.monotonic()
            if with_outage:
                camera.kill()
            time.sleep(args.outage)
            after, elapsed = run.frames(), time.monotonic() - start
            rates.append((sum(after[:3]) - sum(before[:3])) / elapsed)
            if with_outage:
                back = camera.start()
                frames = run.frames()[3]
                while run.frames()[3] <= frames and time.monotonic() - back < args.reconnect_max + 60:
                    time.sleep(0.05)
                recovery = time.monotonic() - back
        finally:
            run.stop()
            camera.kill()
    ratio = rates[1] / rates[0]
    assert recovery is not None
    return all(
        [
            check(
                "files' frames/s",
                ratio >= 0.95,  # an outage must not slow the others; they may run faster (the camera's share is free)
                f"{rates[0]:.1f} without, {rates[1]:.1f} during a "
                f"{args.outage:.0f} s outage of the camera ({ratio:.3f}x, goal: not 5% slower)",
            ),
            check(
                "recovery",
                recovery <= args.reconnect_max + 2,
                f"frames flow {recovery:.1f} s after the camera "
                f"is back (goal <= --reconnect-max {args.reconnect_max:g} + 2 s)",
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="check", required=True)
    for name in ("soak", "outage"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True, help="ONNX model (e.g. cfnet demo's demo/models/*.onnx)")
        p.add_argument("--size", type=lambda s: tuple(map(int, s.split("x"))), default=(240, 320), help="HxW")
        p.add_argument("--reconnect-max", type=float, default=30.0)
        p.add_argument("--work", type=Path, help="Folder for videos and outputs (default: a temp folder, removed)")
    soak_args, outage_args = sub.choices["soak"], sub.choices["outage"]
    soak_args.add_argument("--minutes", type=float, default=30.0)
    soak_args.add_argument("--drop-every", type=float, default=60.0, help="Seconds between camera drops")
    soak_args.add_argument("--down-for", type=float, default=5.0, help="Seconds the camera stays down")
    soak_args.add_argument("--segment-seconds", type=float, default=60.0)
    soak_args.add_argument("--retain-gb", type=float, default=0.2)
    soak_args.add_argument("--warmup", type=float, default=120.0, help="Seconds before RSS is the baseline")
    soak_args.add_argument("--every", type=float, default=5.0, help="Seconds between samples")
    soak_args.add_argument("--samples", type=Path, help="Also write every sample here, one JSON line each")
    outage_args.add_argument("--outage", type=float, default=60.0)
    outage_args.add_argument("--warmup", type=float, default=20.0)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cfnet-cameras-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ok = soak(args, work) if args.check == "soak" else outage(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
