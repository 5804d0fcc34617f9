"""`run_stream` and `cfnet stream`/`cfnet segment`: frame-exact output, masks against ONNX Runtime, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.backends import Backend, open_backend
from runtime.stream import run_stream
from tests.runtime.helpers import (
    ROOT,
    ListSource,
    Reference,
    StalledSource,
    WrappedBackend,
    cfnet,
    read_video,
    synthetic_frames,
)


def test_stream_cli_keeps_every_frame_and_masks_equal_onnxruntime(
    tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    video = write_video(tmp_path / "in.mp4", synthetic_frames(12, (48, 64)), fps=12.0)
    out, masks = tmp_path / "out" / "seg.mp4", tmp_path / "masks"
    code, stdout, _ = cfnet(
        ["stream", video, "--model", tiny_onnx, "--out", out, "--save-masks", masks, "--json"], capsys
    )
    assert code == 0
    stats = json.loads(stdout)["streams"][0]
    assert (stats["frames"], stats["dropped"], stats["ended_by"], stats["output"]) == (12, 0, "end", str(out))
    assert {"read", "preprocess", "infer", "postprocess", "write", "end_to_end"} <= set(stats["latency_ms"])
    written, fps = read_video(out)
    inputs, in_fps = read_video(video)
    assert len(written) == len(inputs) == 12 and fps == pytest.approx(in_fps)
    assert all(f.shape == (48, 64, 3) for f in written)
    assert sorted(os.listdir(out.parent)) == ["seg.mp4"]  # no temp file left
    reference = Reference(tiny_onnx, (48, 64), 8)
    for i, frame in enumerate(inputs):
        saved = cv2.imread(str(masks / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(saved, reference.mask(frame))


EDGE_ABSENT = ("torch", "torchvision", "onnx", "onnxslim", "matplotlib", "tqdm")  # what an edge box lacks


def test_segment_and_stream_commands_run_where_torch_cannot_be_imported(
    tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path]
) -> None:
    frames = synthetic_frames(6, (48, 64))
    video = write_video(tmp_path / "in.mp4", frames, fps=6.0)
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), frames[0])
    code = (
        "import sys\n"
        f"for name in {EDGE_ABSENT!r}: sys.modules[name] = None  # import now raises ImportError\n"
        "from cfnet.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    commands = [
        ["stream", str(video), "--model", str(tiny_onnx), "--out", str(tmp_path / "seg.mp4"), "--json"],
        ["segment", str(image), "--model", str(tiny_onnx), "--out", str(tmp_path / "masks")],
    ]
    results = [
        subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
        for args in commands
    ]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert json.loads(results[0].stdout)["streams"][0]["frames"] == 6 and len(read_video(tmp_path / "seg.mp4")[0]) == 6
    assert (tmp_path / "masks" / "street_mask.png").is_file()


def test_run_stream_letterboxes_frames_of_another_size(
    tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path]
) -> None:
    video = write_video(tmp_path / "wide.mp4", synthetic_frames(6, (60, 90), seed=3), fps=8.0)
    masks: dict[int, np.ndarray] = {}
    with open_backend(tiny_onnx, device="cpu") as backend:
        stats = run_stream(
            str(video), backend, tmp_path / "wide_seg.mp4", on_frame=lambda i, f, m, o: masks.update({i: m})
        )
    assert stats.frames == 6 and sorted(masks) == list(range(6))
    reference = Reference(tiny_onnx, (48, 64), 8)  # 60x90 -> 43x64 -> padded 48x64
    for i, frame in enumerate(read_video(video)[0]):
        assert masks[i].shape == (60, 90)
        np.testing.assert_array_equal(masks[i], reference.mask(frame))
    assert [f.shape for f in read_video(tmp_path / "wide_seg.mp4")[0]] == [(60, 90, 3)] * 6


def test_max_frames_stops_early_with_a_finalised_video(
    tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path]
) -> None:
    video = write_video(tmp_path / "in.mp4", synthetic_frames(10, (48, 64)))
    with open_backend(tiny_onnx, device="cpu") as backend:
        stats = run_stream(str(video), backend, tmp_path / "first4.mp4", max_frames=4)
    assert (stats.frames, stats.read, stats.ended_by) == (4, 4, "max-frames")
    assert len(read_video(tmp_path / "first4.mp4")[0]) == 4


def test_grayscale_video_is_adapted(tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path]) -> None:
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in synthetic_frames(5, (48, 64))]
    video = write_video(tmp_path / "gray.mp4", gray, fps=5.0, color=False)
    masks: dict[int, np.ndarray] = {}
    with open_backend(tiny_onnx, device="cpu") as backend:
        stats = run_stream(
            str(video), backend, tmp_path / "gray_seg.mp4", on_frame=lambda i, f, m, o: masks.update({i: m})
        )
    assert stats.frames == 5
    reference = Reference(tiny_onnx, (48, 64), 8)
    decoded = read_video(video)[0]
    for i, frame in enumerate(decoded):
        np.testing.assert_array_equal(masks[i], reference.mask(frame))
    written = read_video(tmp_path / "gray_seg.mp4")[0]
    assert len(written) == 5 and written[0].shape == (48, 64, 3)




def test_frames_changing_size_mid_stream_are_resized_to_the_stream_size(tiny_onnx: Path, tmp_path: Path) -> None:
    frames = synthetic_frames(3, (48, 64)) + synthetic_frames(2, (72, 96), seed=5) + [np.zeros((48, 64), np.uint8)]
    masks: dict[int, np.ndarray] = {}
    with open_backend(tiny_onnx, device="cpu") as backend:
        stats = run_stream(
            ListSource(frames), backend, tmp_path / "o.mp4", on_frame=lambda i, f, m, o: masks.update({i: m})
        )
    assert (stats.frames, stats.resized) == (6, 2)
    assert all(m.shape == (48, 64) for m in masks.values())
    assert len(read_video(tmp_path / "o.mp4")[0]) == 6


class BlockedBackend(WrappedBackend):
    """Wraps a backend; `infer` waits until the source is exhausted, so a live source must drop frames."""

    def __init__(self, backend: Backend, release: threading.Event) -> None:
        super().__init__(backend, "blocked")
        self.release = release

    def infer(self, images: np.ndarray) -> np.ndarray:
        self.release.wait(timeout=30)
        return self.inner.infer(images)


def test_live_source_drops_the_oldest_frames_when_inference_lags(tiny_onnx: Path, tmp_path: Path) -> None:
    source = ListSource(synthetic_frames(20, (48, 64)), live=True)
    seen: list[int] = []
    out = tmp_path / "live.mp4"
    with open_backend(tiny_onnx, device="cpu") as backend:
        blocked = BlockedBackend(backend, source.exhausted)
        stats = run_stream(source, blocked, out, on_frame=lambda i, f, m, o: seen.append(i))  # type: ignore[arg-type]
    assert stats.read == 20 and stats.frames + stats.dropped == 20
    assert stats.dropped >= 17 and seen == sorted(seen) and seen[-1] == 19  # the newest frames survive
    assert stats.ended_by == "source lost" and len(read_video(out)[0]) == stats.frames  # finalised on loss


@pytest.mark.parametrize(
    ("make_source", "message"),
    [
        (lambda d: d / "missing.mp4", "error: video not found"),
        (lambda d: (d / "text.mp4").write_text("not a video") and d / "text.mp4", "error: cannot open video"),
        (lambda d: "99", "error: cannot open camera (index 99)"),
        (lambda d: "rtsp://127.0.0.1:9/none", "error: cannot open stream URL"),
    ],
)
def test_bad_sources_are_one_line_and_exit_2(
    make_source: Callable[[Path], object],
    message: str,
    tiny_onnx: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # capfd: OpenCV's and FFmpeg's own messages (written by C code to fd 2) must not add lines;
    # --no-reconnect: otherwise a camera or URL unreachable at the start is tried again and again
    code, stdout, stderr = cfnet(
        ["stream", make_source(tmp_path), "--model", tiny_onnx, "--out", tmp_path / "o.mp4", "--no-reconnect"], capfd
    )
    assert code == 2 and stderr.startswith(message) and len(stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*o.mp4*"))


def test_zero_frame_video_is_refused(tiny_onnx: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (64, 48))
    writer.release()
    capfd.readouterr()
    code, _, stderr = cfnet(["stream", empty, "--model", tiny_onnx], capfd)
    assert code == 2 and "no frames" in stderr and len(stderr.strip().splitlines()) == 1


def test_bad_models_are_one_line_and_exit_2(
    bare_onnx: Path, tmp_path: Path, write_video: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    video = write_video(tmp_path / "in.mp4", synthetic_frames(3, (48, 64)))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(os.urandom(256))
    code, _, stderr = cfnet(["stream", video, "--model", corrupt], capsys)
    assert code == 2 and stderr.startswith("error: cannot load ONNX model") and f"({corrupt})" in stderr
    code, _, stderr = cfnet(["stream", video, "--model", bare_onnx], capsys)
    assert code == 2 and "no cfnet metadata" in stderr and "--classes" in stderr
    code, stdout, _ = cfnet(["stream", video, "--model", bare_onnx, "--classes", "4", "--input-size", "48x64"], capsys)
    assert code == 0 and stdout.startswith("3 frames (0 dropped, 0 resized)") and "ended: end" in stdout
    assert "infer" in stdout and "p90" in stdout
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "model.engine.json").write_text(
        json.dumps(
            {"cfnet.classes": '["a"]', "cfnet.mean": "[0,0,0]", "cfnet.std": "[1,1,1]", "cfnet.input_size": "48x64"}
        )
    )
    code, _, stderr = cfnet(["stream", video, "--model", engine], capsys)
    assert code == 2 and stderr.startswith("error: TensorRT is not available (") and len(stderr.splitlines()) == 1


def test_show_without_gui_is_one_line(
    tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from runtime.stream import gui_available

    video = write_video(tmp_path / "in.mp4", synthetic_frames(2, (48, 64)))
    if gui_available():
        pytest.skip("this OpenCV build has a GUI; --show would open a window")
    code, _, stderr = cfnet(["stream", video, "--model", tiny_onnx, "--show"], capsys)
    assert code == 2 and stderr.startswith("error: --show needs OpenCV with GUI support")


def test_segment_cli_writes_mask_and_overlay_per_image(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    color = tmp_path / "street.png"
    cv2.imwrite(str(color), synthetic_frames(1, (60, 90), seed=7)[0])
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), cv2.cvtColor(synthetic_frames(1, (48, 64))[0], cv2.COLOR_BGR2GRAY))
    out = tmp_path / "seg"
    code, stdout, _ = cfnet(
        ["segment", color, gray, "--model", tiny_onnx, "--out", out, "--alpha", "0.3", "--json"], capsys
    )
    assert code == 0 and len(json.loads(stdout)) == 2
    assert sorted(os.listdir(out)) == ["gray_mask.png", "gray_overlay.png", "street_mask.png", "street_overlay.png"]
    reference = Reference(tiny_onnx, (48, 64), 8)
    for name in ("street", "gray"):
        image = cv2.imread(str(tmp_path / f"{name}.png"), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(out / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, reference.mask(image))
        assert cv2.imread(str(out / f"{name}_overlay.png")).shape == image.shape
    code, _, stderr = cfnet(["segment", tmp_path / "nope.png", "--model", tiny_onnx, "--out", out], capsys)
    assert code == 2 and stderr.startswith("error: image not found")
    (tmp_path / "text.png").write_text("not an image")
    code, _, stderr = cfnet(["segment", tmp_path / "text.png", "--model", tiny_onnx, "--out", out], capsys)
    assert code == 2 and stderr.startswith("error: cannot read image")
    (tmp_path / "b").mkdir()
    cv2.imwrite(str(tmp_path / "b" / "street.png"), synthetic_frames(1, (48, 64))[0])
    code, _, stderr = cfnet(
        ["segment", color, tmp_path / "b" / "street.png", "--model", tiny_onnx, "--out", out], capsys
    )
    assert code == 2 and "two images are named 'street'" in stderr


def test_ctrl_c_ends_with_a_finalised_video(tiny_onnx: Path, tmp_path: Path, write_video: Callable[..., Path]) -> None:
    video = write_video(tmp_path / "long.mp4", synthetic_frames(400, (120, 160)), fps=25.0)
    out, masks = tmp_path / "long_seg.mp4", tmp_path / "masks"
    cmd = [
        sys.executable,
        "-m",
        "cfnet",
        "stream",
        str(video),
        "--model",
        str(tiny_onnx),
        "--out",
        str(out),
        "--save-masks",
        str(masks),
        "--threads",
        "1",
        "--json",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (masks.is_dir() and len(os.listdir(masks)) >= 3) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    stats = json.loads(stdout)["streams"][0]
    if stats["ended_by"] == "end":
        pytest.fail("the stream finished before the interrupt; make the video longer")
    assert stats["ended_by"] == "interrupted" and 0 < stats["frames"] < 400
    assert len(read_video(out)[0]) == stats["frames"]
    assert not [p for p in os.listdir(tmp_path) if ".part" in p]




def test_an_error_ends_the_run_with_a_finalised_video_even_if_the_reader_is_stuck(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    calls: list[int] = []

    def fail_on_last(index: int, frame: np.ndarray, mask: np.ndarray, blended: np.ndarray) -> None:
        calls.append(index)
        if index == 2:  # the last frame before the source stalls (earlier ones may be dropped: it is live)
            raise RuntimeError("callback failed")

    out = tmp_path / "partial.mp4"
    started = time.monotonic()
    with open_backend(tiny_onnx, device="cpu") as backend, pytest.raises(RuntimeError, match="callback failed"):
        run_stream(StalledSource(synthetic_frames(3, (48, 64)), live=True), backend, out, on_frame=fail_on_last)
    assert time.monotonic() - started < 30  # did not wait for the stalled read
    assert len(read_video(out)[0]) == len(calls) >= 1  # each frame is written before its callback runs
