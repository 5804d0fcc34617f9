"""Several sources in one pipeline (`run_streams`, `cfnet stream A B C`), signals, and outputs that must never
be lost or overwrite an input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.backends import Backend, open_backend
from runtime.errors import UserError
from runtime.stream import RunStats, default_batch, default_workers, run_stream, run_streams
from runtime.stream.sizing import check_batch
from runtime.video import stream_names
from tests.runtime.helpers import (
    ROOT,
    ListSource,
    StalledSource,
    WrappedBackend,
    cfnet,
    export_tiny,
    read_video,
    synthetic_frames,
    tiny_metadata,
    write_video_file,
)


class RecordingBackend(WrappedBackend):
    """Wraps a backend and records the shape of every batch it is given."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend, "recording")
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, images: np.ndarray) -> np.ndarray:
        self.shapes.append(images.shape)
        return self.inner.infer(images)


def single_stream_masks(video: Path, model: Path) -> list[np.ndarray]:
    masks: list[np.ndarray] = []
    with open_backend(model, device="cpu") as backend:
        run_stream(str(video), backend, on_frame=lambda i, f, m, o: masks.append(m))
    return masks


def test_three_files_in_one_run_keep_their_frames_sizes_and_single_stream_masks(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 60x90 letterboxes to the same 48x64 canvas as 48x64; 40x30 (portrait) to another one
    specs = {"front": (9, (48, 64)), "side": (5, (60, 90)), "rear": (7, (40, 30))}
    videos = {
        n: write_video_file(tmp_path / f"{n}.mp4", synthetic_frames(c, s, seed=len(n))) for n, (c, s) in specs.items()
    }
    out, masks = tmp_path / "seg", tmp_path / "masks"
    code, stdout, _ = cfnet(
        [
            "stream",
            *videos.values(),
            "--model",
            tiny_onnx,
            "--out",
            out,
            "--save-masks",
            masks,
            "--batch",
            "3",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    summary = json.loads(stdout)
    assert [s["frames"] for s in summary["streams"]] == [9, 5, 7]
    assert [s["ended_by"] for s in summary["streams"]] == ["end"] * 3
    aggregate = summary["aggregate"]
    assert aggregate["frames"] == 21 and aggregate["batch"] == 3
    assert sum(int(k) * v for k, v in aggregate["batch_sizes"].items()) == 21
    assert sorted(os.listdir(out)) == ["front.mp4", "rear.mp4", "side.mp4"]  # no temp file left
    for name, (count, size) in specs.items():
        written = read_video(out / f"{name}.mp4")[0]
        assert len(written) == count and written[0].shape[:2] == size
        for i, expected in enumerate(single_stream_masks(videos[name], tiny_onnx)):
            np.testing.assert_array_equal(
                cv2.imread(str(masks / name / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED), expected
            )


def test_batches_cross_streams_but_never_mix_input_sizes(tiny_onnx: Path, tmp_path: Path) -> None:
    sources = [
        write_video_file(tmp_path / "a.mp4", synthetic_frames(8, (48, 64))),
        write_video_file(tmp_path / "b.mp4", synthetic_frames(8, (48, 64), seed=1)),
        write_video_file(tmp_path / "c.mp4", synthetic_frames(6, (40, 30), seed=2)),
    ]
    with open_backend(tiny_onnx, device="cpu") as backend:
        recording = RecordingBackend(backend)
        result = run_streams([str(s) for s in sources], recording, batch=3, batch_timeout_ms=200)  # type: ignore[arg-type]
    assert [s.frames for s in result.streams] == [8, 8, 6]
    assert sum(shape[0] for shape in recording.shapes) == 22
    assert max(shape[0] for shape in recording.shapes) == 3  # batches are formed across the streams
    assert {shape[2:] for shape in recording.shapes} == {(48, 64), (48, 40)}  # one canvas per batch
    assert result.batch_sizes == {n: sum(1 for s in recording.shapes if s[0] == n) for n in result.batch_sizes}


class ShufflingBackend(RecordingBackend):
    """Concurrent calls that finish out of order: each sleeps a random 0-30 ms before inferring."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend)
        self.concurrent = True
        self.random, self.active, self.most = np.random.default_rng(0), 0, 0
        self.lock = threading.Lock()

    def infer(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            delay = float(self.random.uniform(0, 0.03))
        time.sleep(delay)
        try:
            return super().infer(images)
        finally:
            with self.lock:
                self.active -= 1


def test_inference_workers_finishing_out_of_order_keep_each_streams_order_and_masks(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    videos = [
        write_video_file(tmp_path / "a.mp4", synthetic_frames(12, (48, 64))),
        write_video_file(tmp_path / "b.mp4", synthetic_frames(9, (40, 30), seed=3)),
    ]
    seen: dict[int, list[tuple[int, np.ndarray]]] = {0: [], 1: []}
    with open_backend(tiny_onnx, device="cpu") as backend:
        shuffling = ShufflingBackend(backend)
        result = run_streams(
            [str(v) for v in videos],
            shuffling,  # type: ignore[arg-type]
            infer_workers=3,
            outs=[tmp_path / "a_seg.mp4", tmp_path / "b_seg.mp4"],
            on_frame=lambda s, i, f, m, o: seen[s].append((i, m)),
        )
    assert shuffling.most > 1 and result.workers == 3  # calls really overlapped
    assert [s.frames for s in result.streams] == [12, 9]
    for stream, video in enumerate(videos):
        assert [i for i, _ in seen[stream]] == list(range(len(seen[stream])))  # written in the source's order
        for (_, mask), expected in zip(seen[stream], single_stream_masks(video, tiny_onnx), strict=True):
            np.testing.assert_array_equal(mask, expected)
    assert [len(read_video(tmp_path / n)[0]) for n in ("a_seg.mp4", "b_seg.mp4")] == [12, 9]


def test_a_backend_that_runs_one_call_at_a_time_refuses_several_workers(tiny_onnx: Path) -> None:
    video = ListSource(synthetic_frames(2, (48, 64)))
    with open_backend(tiny_onnx, device="cpu") as backend:
        assert (default_workers(backend, 1), default_workers(backend, 3)) == (1, 2)
        serial = RecordingBackend(backend)  # no `concurrent`: as the TensorRT and Triton backends
        assert default_workers(serial, 3) == 1  # type: ignore[arg-type]
        with pytest.raises(UserError, match="recording runs one inference at a time; use --infer-workers 1"):
            run_streams([video], serial, infer_workers=2)  # type: ignore[arg-type]


class LingeringSource(ListSource):
    """A file-like source that waits `linger` seconds before saying it has ended."""

    def __init__(self, frames: list[np.ndarray], linger: float) -> None:
        super().__init__(frames)
        self.linger = linger

    def read(self) -> np.ndarray | None:
        if not self.frames:
            time.sleep(self.linger)
        return super().read()


def test_a_frame_held_for_a_batch_when_every_stream_ends_is_still_inferred(tiny_onnx: Path) -> None:
    # one worker holds the only frame for a batch of 2 that cannot fill; when the stream ends, whichever worker
    # wakes first takes the end: when it was the other one, the held frame used to be dropped (the run hung)
    with open_backend(tiny_onnx, device="cpu") as backend:
        for attempt in range(12):
            source = LingeringSource(synthetic_frames(1, (48, 64), seed=attempt), linger=0.05)
            results: list[RunStats] = []
            run = threading.Thread(
                target=lambda source=source, results=results: results.append(
                    run_streams([source], backend, batch=2, batch_timeout_ms=5000, infer_workers=2)
                ),
                daemon=True,
            )
            started = time.monotonic()
            run.start()
            run.join(timeout=10)
            assert not run.is_alive(), f"the run hung (attempt {attempt})"
            assert time.monotonic() - started < 5  # the held frame went when the stream ended, not at the timeout
            assert results[0].streams[0].frames == 1


class SlowSource(ListSource):
    """A file-like source that takes `delay` seconds per frame."""

    def __init__(self, frames: list[np.ndarray], delay: float) -> None:
        super().__init__(frames)
        self.delay = delay

    def read(self) -> np.ndarray | None:
        time.sleep(self.delay)
        return super().read()


def test_the_main_thread_sleeps_while_a_stream_outlives_the_others(tiny_onnx: Path) -> None:
    # the last source ends first: the main thread used to join that finished writer in a loop (a core spun)
    sources = [SlowSource(synthetic_frames(20, (48, 64)), delay=0.04), ListSource(synthetic_frames(1, (48, 64)))]
    with open_backend(tiny_onnx, device="cpu") as backend:
        wall, cpu = time.perf_counter(), time.thread_time()
        result = run_streams(sources, backend)  # type: ignore[arg-type]
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    assert [s.frames for s in result.streams] == [20, 1] and wall > 0.8
    assert cpu < 0.25 * wall, f"main thread used {cpu:.2f} s of CPU in {wall:.2f} s"


class FailingSource(ListSource):
    """A file-like source whose read raises after `fail_after` frames."""

    def __init__(self, frames: list[np.ndarray], fail_after: int) -> None:
        super().__init__(frames)
        self.fail_after, self.count = fail_after, 0

    def read(self) -> np.ndarray | None:
        self.count += 1
        if self.count > self.fail_after:
            raise OSError("connection reset")
        return super().read()


def test_a_source_failing_midway_ends_only_its_own_stream(tiny_onnx: Path, tmp_path: Path) -> None:
    good = write_video_file(tmp_path / "good.mp4", synthetic_frames(12, (48, 64)))
    failing = FailingSource(synthetic_frames(10, (48, 64), seed=4), fail_after=3)
    with open_backend(tiny_onnx, device="cpu") as backend:
        result = run_streams([str(good), failing], backend, outs=[tmp_path / "good_seg.mp4", tmp_path / "bad.mp4"])
    ok, bad = result.streams
    assert (ok.frames, ok.ended_by, ok.error) == (12, "end", None)
    assert (bad.frames, bad.ended_by, bad.error) == (3, "error", "connection reset")
    assert isinstance(result.errors[1], OSError) and 0 not in result.errors
    assert len(read_video(tmp_path / "good_seg.mp4")[0]) == 12 and len(read_video(tmp_path / "bad.mp4")[0]) == 3


def test_a_stalled_live_source_is_evicted_without_stalling_the_others(tiny_onnx: Path, tmp_path: Path) -> None:
    good = write_video_file(tmp_path / "good.mp4", synthetic_frames(15, (48, 64)))
    stalled = StalledSource(synthetic_frames(2, (48, 64), seed=6), live=True)  # then blocks in read() for 60 s
    started = time.monotonic()
    with open_backend(tiny_onnx, device="cpu") as backend:
        result = run_streams(
            [stalled, str(good)], backend, outs=[tmp_path / "cam.mp4", tmp_path / "good_seg.mp4"], stall_timeout=0.5
        )
    assert time.monotonic() - started < 30  # did not wait for the stalled read
    cam, ok = result.streams
    assert (ok.frames, ok.ended_by) == (15, "end")
    assert cam.ended_by == "stalled" and cam.frames + cam.dropped == 2
    assert len(read_video(tmp_path / "cam.mp4")[0]) == cam.frames


def test_a_batch_the_model_cannot_take_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    static = export_tiny(tmp_path / "static.onnx", tiny_metadata(), fixed_size=(48, 64))  # N = 1 too
    video = write_video_file(tmp_path / "a.mp4", synthetic_frames(3, (48, 64)))
    code, _, stderr = cfnet(
        ["stream", video, video, "--model", static, "--batch", "2", "--out", tmp_path / "o"], capsys
    )
    assert code == 2 and len(stderr.splitlines()) == 1
    assert stderr.startswith("error: the model takes batches of at most 1") and "use --batch 1" in stderr
    assert not (tmp_path / "o").exists()
    code, stdout, _ = cfnet(["stream", video, video, "--model", static, "--out", tmp_path / "o"], capsys)
    # the default takes what the model takes; two ONNX Runtime calls in flight on the CPU
    assert code == 0 and "batch 1 (timeout 40 ms), 2 inference workers, batches: 6x1" in stdout

    with open_backend(static, device="cpu") as backend:
        assert (backend.max_batch, default_batch(backend, 4)) == (1, 1)
        backend.device = "cuda"  # type: ignore[attr-defined]  # as ONNX Runtime on a GPU: capped by the model
        assert default_batch(backend, 4) == 1
        backend.max_batch = None  # type: ignore[attr-defined]  # a dynamic batch: one frame per source
        assert default_batch(backend, 4) == 4

    class Engine:
        name, path, max_batch = "tensorrt", str(tmp_path / "model.engine"), 2

    with pytest.raises(UserError, match=r"at most 2, asked for 4; use --batch 2 .*--max-shape 4x3xHxW"):
        check_batch(Engine(), 4)  # type: ignore[arg-type]


def test_an_output_that_is_an_input_is_refused(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = write_video_file(tmp_path / "s.mp4", synthetic_frames(3, (48, 64)))
    before = video.read_bytes()
    code, _, stderr = cfnet(["stream", video, "--model", tiny_onnx, "--out", tmp_path / "." / "s.mp4"], capsys)
    assert code == 2 and stderr.startswith("error: the output would overwrite the input")
    assert video.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["s.mp4"]
    code, _, stderr = cfnet(["stream", video, "--model", tiny_onnx, "--out", tmp_path], capsys)  # -> DIR/s.mp4
    assert code == 2 and stderr.startswith("error: the output would overwrite the input")
    assert video.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["s.mp4"]
    code, _, stderr = cfnet(["stream", video, video, "--model", tiny_onnx, "--out", tmp_path / "x.mp4"], capsys)
    assert code == 2 and "--out is a folder" in stderr


def test_stream_names_are_unique_and_file_safe() -> None:
    assert stream_names(["a/front.mp4", "b/front.mp4", "0", "rtsp://cam:554/live?x=1", "front-2.mp4"]) == [
        "front",
        "front-2",
        "camera0",
        "cam-554-live",
        "front-2-2",
    ]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video_file(tmp_path_factory.mktemp("long") / "long.mp4", synthetic_frames(300, (120, 160)), 25.0)


def start_stream(args: list[str], masks: Path) -> subprocess.Popen[str]:
    """`cfnet stream ARGS --save-masks MASKS --threads 1 --json` in a subprocess, once a few masks are written."""
    cmd = [sys.executable, "-m", "cfnet", "stream", *args, "--save-masks", str(masks), "--threads", "1", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if masks.is_dir() and sum(len(files) for _, _, files in os.walk(masks)) >= 4:
            break
        time.sleep(0.02)
    return proc


def test_sigterm_finalises_every_output_like_ctrl_c(tiny_onnx: Path, long_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    proc = start_stream(
        [str(long_video), str(long_video), "--model", str(tiny_onnx), "--out", str(out)], tmp_path / "m"
    )
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    streams = json.loads(stdout)["streams"]
    if any(s["ended_by"] == "end" for s in streams):
        pytest.fail("a stream finished before the signal; make the video longer")
    assert [s["ended_by"] for s in streams] == ["terminated", "terminated"]
    for stats, name in zip(streams, ("long.mp4", "long-2.mp4"), strict=True):
        assert 0 < stats["frames"] < 300 and stats["output"] == str(out / name)
        assert len(read_video(out / name)[0]) == stats["frames"]  # finalised: playable, every frame
    assert sorted(os.listdir(out)) == ["long-2.mp4", "long.mp4"]


def test_the_temp_files_of_a_killed_run_are_removed_by_the_next_run(
    tiny_onnx: Path, long_video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "seg.mp4"
    proc = start_stream([str(long_video), "--model", str(tiny_onnx), "--out", str(out)], tmp_path / "m")
    proc.kill()
    proc.communicate(timeout=30)
    left = [p for p in os.listdir(tmp_path) if ".part" in p]
    assert left, "the killed run left no temp file: nothing to test"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:  # a temp file of a running process is kept
        alive = tmp_path / f".other.{sleeper.pid}.part.mp4"
        alive.write_bytes(b"")
        short = write_video_file(tmp_path / "short.mp4", synthetic_frames(2, (48, 64)))
        with open_backend(tiny_onnx, device="cpu") as backend:
            run_stream(str(short), backend, tmp_path / "again.mp4")
        assert sorted(p for p in os.listdir(tmp_path) if ".part" in p) == [alive.name]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_live_sources_drop_only_their_own_frames(tiny_onnx: Path, tmp_path: Path) -> None:
    release = threading.Event()
    fast = ListSource(synthetic_frames(20, (48, 64)), live=True)
    file_frames = synthetic_frames(6, (48, 64), seed=9)

    class Gate(RecordingBackend):
        def infer(self, images: np.ndarray) -> np.ndarray:
            release.wait(timeout=30)
            return super().infer(images)

    with open_backend(tiny_onnx, device="cpu") as backend:
        gate = Gate(backend)
        threading.Thread(target=lambda: (fast.exhausted.wait(30), release.set()), daemon=True).start()
        result = run_streams([fast, ListSource(file_frames)], gate, batch=1)  # type: ignore[arg-type]
    live, file = result.streams
    assert live.dropped > 0 and live.frames + live.dropped == 20
    assert (file.frames, file.dropped) == (6, 0)


@pytest.mark.parametrize("fps", [10.0, 29.97])
def test_an_odd_size_video_keeps_its_size(tiny_onnx: Path, tmp_path: Path, fps: float) -> None:
    from runtime.video import VideoSource, VideoWriter

    frames = synthetic_frames(14, (127, 255), seed=3)
    writer = VideoWriter(tmp_path / "odd.mp4", fps, (127, 255))
    for frame in frames:
        writer.write(frame)
    writer.finish()
    source = VideoSource(str(tmp_path / "odd.mp4"))
    assert source.size == (127, 255) and source.fps == pytest.approx(fps, rel=1e-3)
    overlays: list[np.ndarray] = []
    with open_backend(tiny_onnx, device="cpu") as backend:
        stats = run_stream(source, backend, tmp_path / "odd_seg.mp4", on_frame=lambda i, f, m, o: overlays.append(o))
    written = read_video(tmp_path / "odd_seg.mp4")[0]
    assert stats.frames == len(written) == 14 and {f.shape for f in written} == {(127, 255, 3)}
    for decoded, expected in zip(written, overlays, strict=True):  # lossy, but the same picture, edges included
        error = np.abs(decoded.astype(int) - expected.astype(int))
        assert error.mean() < 6 and error[-1].mean() < 12 and error[:, -1].mean() < 12


def test_a_stream_failing_midway_exits_1_after_finalising_every_output(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_video_file(tmp_path / "a.mp4", synthetic_frames(6, (48, 64)))
    b = write_video_file(tmp_path / "b.mp4", synthetic_frames(6, (48, 64), seed=1))
    (tmp_path / "masks" / "b" / "000003.png").mkdir(parents=True)  # a folder where b's fourth mask would go
    out = tmp_path / "seg"
    code, stdout, stderr = cfnet(
        ["stream", a, b, "--model", tiny_onnx, "--out", out, "--save-masks", tmp_path / "masks"], capsys
    )
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]  # the rest: the progress bar
    assert code == 1 and len(errors) == 1 and "output path is a folder" in errors[0] and errors[0].endswith(f"({b})")
    assert "6 frames (0 dropped, 0 resized) from " + str(a) in stdout and "ended: error" in stdout
    assert len(read_video(out / "a.mp4")[0]) == 6 and len(os.listdir(tmp_path / "masks" / "a")) == 6
    # the MP4 agrees with the summary and the masks: the frame whose mask could not be written is not encoded
    assert "3 frames (0 dropped, 0 resized) from " + str(b) in stdout
    assert len(read_video(out / "b.mp4")[0]) == 3 and len(os.listdir(tmp_path / "masks" / "b")) == 3 + 1


def test_sigterm_before_the_first_frame_exits_130_like_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import runtime.backends

    def terminated_while_loading(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr(runtime.backends, "open_backend", terminated_while_loading)
    video = write_video_file(tmp_path / "a.mp4", synthetic_frames(2, (48, 64)))
    before = signal.getsignal(signal.SIGTERM)
    code, _, stderr = cfnet(["stream", video, "--model", tmp_path / "m.onnx", "--out", tmp_path / "o.mp4"], capsys)
    assert code == 130 and stderr.strip() == "error: interrupted"
    assert signal.getsignal(signal.SIGTERM) == before and sorted(os.listdir(tmp_path)) == ["a.mp4"]
