"""A real Triton server (the nvidia-pytriton wheel's tritonserver) on loopback, serving the tiny model's repository.

One server per module (start ~5 s); every server started here is stopped, and no server or Python-backend
stub process survives it (checked through /proc).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from export.mask import write_mask_variant
from export.triton import export_triton
from runtime.backends.onnxruntime import OnnxRuntimeBackend
from runtime.backends.triton import TritonBackend, parse_url
from runtime.errors import UserError
from runtime.preprocess import preprocess
from runtime.segmentation import segment
from runtime.stream import run_stream
from runtime.triton.server import TritonServer, batch_counters, free_ports
from tests.runtime.helpers import export_tiny, read_video, synthetic_frames, tiny_metadata, write_video_file
from tests.runtime.triton.helpers import ROOT, processes_naming, start_serve

pytestmark = pytest.mark.slow  # acceptance: a real tritonserver

START_TIMEOUT = 90.0


def model_counters(metrics_url: str) -> tuple[float, float]:
    """(inferences, executions) of `cfnet_model` from Triton's metrics, read by prometheus_client's parser and
    compared with the runtime's own reading (`batch_counters`)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # the parser names a counter's samples NAME_total
            if sample.labels.get("model") == "cfnet_model" and family.name in (
                "nv_inference_count",
                "nv_inference_exec_count",
            ):
                values[family.name] = sample.value
    counts = values["nv_inference_count"], values["nv_inference_exec_count"]
    assert batch_counters(text, "cfnet_model") == counts
    return counts


@pytest.fixture(scope="module")
def repository(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's repository, Python-backend model step; a long queue delay makes batches form reliably."""
    out = tmp_path_factory.mktemp("triton") / "repo"
    export_triton(tiny_onnx, out, backend="python", max_batch=8, queue_delay_us=20000)
    # beside it, the same network exported with its argmax in the graph (`--output mask`)
    masks = write_mask_variant(tiny_onnx, tmp_path_factory.mktemp("triton-mask") / "tiny-mask.onnx")
    export_triton(masks, out, name="cfnetmask", backend="python", max_batch=8)
    # and a static batch-1 export of the network: its step unbatched (max_batch_size 0, full dims)
    static = export_tiny(tmp_path_factory.mktemp("triton-static") / "static.onnx", tiny_metadata(), (48, 64))
    export_triton(static, out, name="cfnetstatic", backend="python")
    return out


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[TritonServer]:
    http, grpc, metrics = free_ports(3)
    with TritonServer(repository, http_port=http, grpc_port=grpc, metrics_port=metrics) as running:
        running.start(START_TIMEOUT)
        yield running
    assert processes_naming(str(repository)) == []


@pytest.fixture(scope="module")
def url(server: TritonServer) -> str:
    return f"grpc://127.0.0.1:{server.grpc_port}/cfnet"


def frames_of_sizes() -> list[np.ndarray]:
    """Frames at the model's size, smaller, larger and of another aspect: resize and padding both matter."""
    sizes = [(48, 64), (30, 50), (97, 120), (64, 40)]
    return [frame for i, size in enumerate(sizes) for frame in synthetic_frames(2, size, seed=i)]


def test_masks_through_triton_equal_the_local_backend_bit_for_bit(tiny_onnx: Path, url: str) -> None:
    with OnnxRuntimeBackend(tiny_onnx, device="cpu") as local, TritonBackend(url) as remote:
        assert remote.metadata == local.metadata
        for frame in frames_of_sizes():
            expected, _ = segment(frame, local)
            via_model, _ = segment(frame, remote)  # preprocessed batch -> {name}_model
            [via_ensemble] = remote.segment_frames(frame[None])  # raw frame -> ensemble -> mask
            assert expected.shape == frame.shape[:2]
            np.testing.assert_array_equal(via_model, expected)
            np.testing.assert_array_equal(via_ensemble, expected)
        assert len(np.unique(expected)) > 1  # a varied mask, not a constant


def test_a_mask_model_serves_its_own_argmax_and_the_same_masks(tiny_onnx: Path, url: str, repository: Path) -> None:
    """Issue 16 through Triton: the model step returns the uint8 mask (1 byte a pixel, not C floats) and the
    ensemble's postprocess only crops and resizes it; masks equal the local logits backend's."""
    config = (repository / "cfnetmask_model" / "config.pbtxt").read_text()
    assert 'name: "mask"' in config and "TYPE_UINT8" in config and "logits" not in config
    with OnnxRuntimeBackend(tiny_onnx, device="cpu") as local, TritonBackend(url + "mask") as remote:
        assert remote.output == "mask"
        for frame in frames_of_sizes():
            expected, _ = segment(frame, local)
            batch, _ = preprocess(frame, remote.metadata)
            returned = remote.infer(batch)
            assert returned.dtype == np.uint8 and returned.shape == (1, *batch.shape[2:])
            np.testing.assert_array_equal(segment(frame, remote)[0], expected)
            np.testing.assert_array_equal(remote.segment_frames(frame[None])[0], expected)


def test_a_static_batch_1_model_is_served_unbatched_and_gives_the_local_masks(url: str, repository: Path) -> None:
    """Issue 22 item 3: the network step of a static batch-1 ONNX has `max_batch_size: 0` and full dims inside an
    ensemble batched at 1, and a real server loads it; frames of any size come back as the local backend's masks
    (padded to the fixed size by the preprocess model, through the ensemble, or by the client, through the step)."""
    config = (repository / "cfnetstatic_model" / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in config and "dims: [1, 3, 48, 64]" in config
    static = repository / "cfnetstatic_model" / "1" / "model.onnx"
    with OnnxRuntimeBackend(static, device="cpu") as local, TritonBackend(url + "static") as remote:
        assert remote.max_batch == 1 and remote.fixed_size == (48, 64)
        for frame in frames_of_sizes():
            expected, _ = segment(frame, local)
            np.testing.assert_array_equal(remote.segment_frames(frame[None])[0], expected)
            np.testing.assert_array_equal(segment(frame, remote)[0], expected)


def test_open_backend_dispatches_grpc_urls_and_metadata_overrides_apply(url: str) -> None:
    from runtime.artifact import Overrides
    from runtime.backends import open_backend

    with open_backend(url, overrides=Overrides(input_size=(24, 32))) as backend:
        assert isinstance(backend, TritonBackend)
        assert backend.metadata.input_size == (24, 32)
        assert backend.metadata.classes == ("road", "car", "sky", "tree")


def test_a_stream_through_triton_writes_the_local_masks(tiny_onnx: Path, url: str, tmp_path: Path) -> None:
    video = write_video_file(tmp_path / "in.mp4", synthetic_frames(6))
    masks: dict[str, list[np.ndarray]] = {"local": [], "triton": []}
    with OnnxRuntimeBackend(tiny_onnx, device="cpu") as local, TritonBackend(url) as remote:
        for key, backend in (("local", local), ("triton", remote)):
            stats = run_stream(
                str(video), backend, tmp_path / f"{key}.mp4", on_frame=lambda i, f, m, o, k=key: masks[k].append(m)
            )
            assert stats.frames == 6
    assert len(masks["triton"]) == 6
    for a, b in zip(masks["local"], masks["triton"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(read_video(tmp_path / "triton.mp4")[0]) == 6


def test_concurrent_streams_are_batched_by_the_server(server: TritonServer, url: str) -> None:
    """Four clients at once: Triton's own metrics count more inferences than executions of the model step."""

    frames = synthetic_frames(12)
    before = model_counters(server.metrics_url)
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with TritonBackend(url) as backend:
                for frame in frames:
                    backend.segment_frames(frame[None])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    after = model_counters(server.metrics_url)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 4 * len(frames)
    assert inferences / executions >= 2.0, f"average batch {inferences / executions:.2f}"


def test_a_server_that_is_down_is_one_clean_error() -> None:
    [port] = free_ports(1)
    with pytest.raises(UserError, match="not reachable"):
        TritonBackend(f"grpc://127.0.0.1:{port}/cfnet", timeout=3)


def test_a_missing_model_is_one_clean_error(server: TritonServer) -> None:
    with pytest.raises(UserError, match="'nothere' is not ready"):
        TritonBackend(f"grpc://127.0.0.1:{server.grpc_port}/nothere", timeout=5)


def test_the_network_steps_name_serves_its_ensemble(url: str) -> None:
    with TritonBackend(url + "_model", timeout=10) as backend:
        assert (backend.ensemble, backend.model) == ("cfnet", "cfnet_model")
        assert backend.segment_frames(synthetic_frames(1)[0][None])[0].shape == (48, 64)


def test_a_refused_shape_is_one_clean_error(url: str) -> None:
    with TritonBackend(url, timeout=10) as backend:
        with pytest.raises(UserError, match="Triton: .*images"):
            backend.infer(np.zeros((1, 4, 48, 64), np.float32))  # 4 channels: the config says 3
        with pytest.raises(UserError, match="Triton: .*batch"):
            backend.infer(np.zeros((9, 3, 8, 8), np.float32))  # over max_batch_size 8


def test_an_empty_frame_is_an_invalid_argument_in_one_line(url: str) -> None:
    """Issue 21 item 12: a frame without a pixel is the client's fault: INVALID_ARGUMENT with one line, not
    INTERNAL with a ZeroDivisionError traceback naming the server's paths."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    address, name = parse_url(url)
    with grpcclient.InferenceServerClient(address) as client:
        for shape in [(1, 0, 0, 3), (1, 0, 7, 3), (1, 7, 0, 3)]:
            frames = grpcclient.InferInput("frames", list(shape), "UINT8")
            frames.set_data_from_numpy(np.zeros(shape, np.uint8))
            with pytest.raises(InferenceServerException) as info:
                client.infer(name, [frames], client_timeout=30)
            message = str(info.value.message())
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT", message
            assert f"empty frame ({shape[1]}x{shape[2]} pixels)" in message
            assert "Traceback" not in message and ".py" not in message and "\n" not in message
    with TritonBackend(url, timeout=30) as backend, pytest.raises(UserError, match=r"Triton: .*empty frame \(0x0"):
        backend.segment_frames(np.zeros((1, 0, 0, 3), np.uint8))


@pytest.mark.parametrize("url", ["http://h:1/cfnet", "grpc://h/cfnet", "grpc://h:1/", "grpc://h:1/a/b"])
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UserError, match="malformed Triton URL"):
        parse_url(url)


def test_cfnet_serve_and_a_server_lost_mid_stream(tiny_onnx: Path, tmp_path: Path) -> None:
    """`cfnet serve` prints the endpoints; SIGTERM stops it cleanly; the stream on it ends with exit 2 and a
    finalised MP4; no server or stub process is left (its own repository: the module's server names the other)."""
    repository, grpc, metrics, serve = start_serve(tiny_onnx, tmp_path)
    try:
        assert serve.stdout is not None
        lines = [serve.stdout.readline() for _ in range(6)]
        assert lines[0].startswith("Triton ready:"), lines
        assert f"gRPC grpc://127.0.0.1:{grpc}" in lines[0]
        assert any(line.split() == ["cfnet_model", "READY"] for line in lines), lines

        video = write_video_file(tmp_path / "in.mp4", synthetic_frames(2000))
        out = tmp_path / "out.mp4"
        stream = subprocess.Popen(
            [sys.executable, "-m", "cfnet", "stream", str(video), "--model", f"grpc://127.0.0.1:{grpc}/cfnet",
             "--out", str(out), "--json"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while model_counters(f"http://127.0.0.1:{metrics}/metrics")[0] < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            serve.send_signal(signal.SIGTERM)  # mid-stream: 10 frames done, 1990 to go
            _, stderr = stream.communicate(timeout=120)
        finally:
            stream.kill()
        assert stream.returncode == 2, stderr
        assert stderr.strip().splitlines()[-1].startswith("error: Triton:"), stderr
        assert "Traceback" not in stderr
        written = read_video(out)[0]
        assert 0 < len(written) < 2000  # the frames before the loss, in a playable file
        assert serve.wait(60) == 0
    finally:
        serve.kill()
        serve.wait(10)
    assert processes_naming(str(repository)) == []


def test_cfnet_segment_takes_a_grpc_url(tiny_onnx: Path, url: str, tmp_path: Path) -> None:
    import cv2

    from cfnet.cli import main

    frame = synthetic_frames(1, (40, 72))[0]
    cv2.imwrite(str(tmp_path / "street.png"), frame)
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(tmp_path / "street.png"), "--model", url, "--out", str(tmp_path / "seg")])
    assert exit_info.value.code == 0
    with OnnxRuntimeBackend(tiny_onnx, device="cpu") as local:
        expected, _ = segment(frame, local)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "seg" / "street_mask.png"), cv2.IMREAD_UNCHANGED), expected)


def test_a_stream_batch_over_the_servers_limit_names_the_fixes_and_writes_nothing(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cfnet.cli import main

    videos = [str(write_video_file(tmp_path / f"{n}.mp4", synthetic_frames(2))) for n in "ab"]
    with pytest.raises(SystemExit) as exit_info:
        main(["stream", *videos, "--model", url, "--batch", "16", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert "use --batch 8 or write the repository again with `cfnet export triton --max-batch 16`" in err
    assert not (tmp_path / "out").exists()


def test_a_repository_the_server_cannot_load_fails_start_up_in_one_line(tmp_path: Path) -> None:
    repository = tmp_path / "broken"
    (repository / "cfnet_model" / "1").mkdir(parents=True)
    (repository / "cfnet_model" / "config.pbtxt").write_text('name: "cfnet_model"\nbackend: "python"\n')
    http, grpc, metrics = free_ports(3)
    server = TritonServer(repository, http_port=http, grpc_port=grpc, metrics_port=metrics)
    with pytest.raises(UserError, match="Triton cannot load the repository: .*model file not found .*cfnet_model"):
        server.start(START_TIMEOUT)
    assert server.process is None and processes_naming(str(repository)) == []


def test_cfnet_serve_refuses_a_folder_without_models(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "cfnet", "serve", str(tmp_path / "empty")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: no model in the repository (write one with `cfnet export triton`) ({tmp_path / 'empty'})"
    ]


def test_serving_an_onnxruntime_repository_on_the_wheels_server_says_to_use_the_python_backend(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cfnet.cli import main

    repository = tmp_path / "repo"
    export_triton(tiny_onnx, repository, backend="onnxruntime")
    http, grpc, metrics = free_ports(3)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(repository), "--http-port", str(http), "--grpc-port", str(grpc),
              "--metrics-port", str(metrics)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert err.startswith("error: Triton cannot load the repository:") and "'onnxruntime'" in err
    assert err.endswith("this server has only the Python backend; export with --backend python)")
    assert processes_naming(str(repository)) == []


def test_a_killed_cfnet_serve_takes_its_server_and_stubs_along(tiny_onnx: Path, tmp_path: Path) -> None:
    """SIGKILL of a serving `cfnet serve`: the server, its stubs, its temp folder (TMPDIR points here) and its
    shared memory all go."""
    repository, _, _, serve = start_serve(tiny_onnx, tmp_path, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        assert serve.stdout is not None and serve.stdout.readline().startswith("Triton ready:")
        running = processes_naming(str(repository))
        assert sum("bin/tritonserver" in c for c in running) == 1
        assert sum("triton_python_backend_stub" in c for c in running) == 3
    finally:
        serve.kill()  # SIGKILL: no clean-up code of cfnet serve runs
        serve.wait(10)
    deadline = time.monotonic() + 30
    while (processes_naming(str(repository)) or any(tmp_path.glob("cfnet-triton-*"))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_naming(str(repository)) == [] and list(tmp_path.glob("cfnet-triton-*")) == []
    assert [n for n in os.listdir("/dev/shm") if n.startswith(f"cfnet-triton-{serve.pid}-")] == []


def test_a_request_over_its_timeout_is_one_clean_error(url: str) -> None:
    with TritonBackend(url, timeout=10) as backend:
        backend.timeout = 1e-4  # far below one round trip
        with pytest.raises(UserError, match="(?i)Triton: .*deadline"):
            backend.segment_frames(synthetic_frames(1)[0][None])
