"""`cfnet serve` under faults, with real signals and the real tritonserver: nothing of a dead server outlives it
(processes, its temp folder, its shared memory), the next server sweeps what a dead one left and never touches a
live one's, and a port in use is refused up front (issue 21 items 6, 8, 17).

Every `cfnet serve` here runs with TMPDIR in the test's own folder, so its temp folder can be looked for there.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from export.triton import export_triton
from runtime.triton.server import TritonServer, free_ports
from tests.runtime.triton.helpers import ROOT, engine, pids_naming, processes_naming, start_serve

pytestmark = pytest.mark.slow  # acceptance: a real tritonserver

START_TIMEOUT = 90.0
SHM = Path("/dev/shm")


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> bool:
    """Poll `condition` until it is true or `timeout` s have passed; its last value, as a bool."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return bool(condition())


def segments_of(owner: int) -> list[str]:
    """Shared-memory segments of the servers `owner` started."""
    return [name for name in os.listdir(SHM) if name.startswith(f"cfnet-triton-{owner}-")]


def temp_folders(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith("cfnet-triton-")]


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    temp = tmp_path / "tmp"
    temp.mkdir()
    return temp, {**os.environ, "TMPDIR": str(temp)}


@pytest.fixture(scope="module")
def live(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A server started by this (live) process."""
    repository = tmp_path_factory.mktemp("live") / "repo"
    export_triton(tiny_onnx, repository, backend="python")
    http, grpc, metrics = free_ports(3)
    with TritonServer(repository, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        server.start(START_TIMEOUT)
        yield server
    assert processes_naming(str(repository)) == []


def test_cfnet_serve_killed_during_start_up_leaves_nothing_behind(
    tiny_onnx: Path, tmp_path: Path, tmpdir_env: tuple[Path, dict[str, str]]
) -> None:
    """SIGKILL while a model is still loading: the stubs (which ignore SIGTERM and do not yet watch their
    server) are ended, the shared memory and the temp folder removed."""
    temp, env = tmpdir_env
    repository, _, _, serve = start_serve(tiny_onnx, tmp_path, env=env, slow=True)
    try:
        assert wait_for(lambda: processes_naming(str(repository / "slow")))  # its stub is initialising
        assert wait_for(lambda: segments_of(serve.pid))
        assert serve.poll() is None  # still starting up
    finally:
        serve.kill()
        serve.wait(10)
    assert wait_for(lambda: not processes_naming(str(repository)) and not temp_folders(temp), 60)
    assert processes_naming(str(repository)) == []
    assert temp_folders(temp) == [] and segments_of(serve.pid) == []


def test_the_next_server_sweeps_what_a_dead_one_left_and_spares_a_live_one(
    live: TritonServer, tiny_onnx: Path, tmp_path: Path, tmpdir_env: tuple[Path, dict[str, str]]
) -> None:
    """A `cfnet serve` and its guard both SIGKILLed during start-up leave stubs, shared memory and a temp folder;
    the next server started removes them, and the live server beside them keeps serving with all its files."""
    temp, env = tmpdir_env
    repository, _, _, serve = start_serve(tiny_onnx, tmp_path / "dead", env=env, slow=True)
    try:
        assert wait_for(lambda: processes_naming(str(repository / "slow")))
        [guard] = pids_naming("runtime.triton.leftovers", str(temp))
        os.kill(guard, signal.SIGKILL)
    finally:
        serve.kill()
        serve.wait(10)
    assert wait_for(lambda: not pids_naming(str(temp), "bin/tritonserver"), 30)  # it got SIGTERM from the kernel
    assert processes_naming(str(repository / "slow")) != []  # an orphaned stub: what the fault leaves
    assert temp_folders(temp) != [] and segments_of(serve.pid) != []

    live_files = [live.log_path, *(SHM / s for s in segments_of(os.getpid()))]
    second = tmp_path / "second"
    second_repository, _, _, again = start_serve(tiny_onnx, second, env=env)
    try:
        assert again.stdout is not None and again.stdout.readline().startswith("Triton ready:")
        assert processes_naming(str(repository)) == []
        assert segments_of(serve.pid) == [] and len(temp_folders(temp)) == 1  # the second server's own
        assert live.ready() and all(p is not None and p.exists() for p in live_files)
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(60)
    assert temp_folders(temp) == [] and processes_naming(str(second_repository)) == []


def test_a_killed_tritonserver_and_an_early_ctrl_c_leave_no_shared_memory(
    tiny_onnx: Path, tmp_path: Path, tmpdir_env: tuple[Path, dict[str, str]]
) -> None:
    temp, env = tmpdir_env
    repository, _, _, serve = start_serve(tiny_onnx, tmp_path / "a", env=env)
    try:
        assert serve.stdout is not None and serve.stdout.readline().startswith("Triton ready:")
        [server] = pids_naming("bin/tritonserver", str(repository))
        assert segments_of(serve.pid)
        os.kill(server, signal.SIGKILL)
        output, _ = serve.communicate(timeout=60)
    finally:
        serve.kill()
        serve.wait(10)
    assert serve.returncode == 2 and output.strip().splitlines()[-1].startswith("error: tritonserver exited")
    assert segments_of(serve.pid) == [] and temp_folders(temp) == [] and processes_naming(str(repository)) == []

    repository, _, _, serve = start_serve(tiny_onnx, tmp_path / "b", env=env, slow=True)
    try:
        assert wait_for(lambda: processes_naming(str(repository / "slow")))  # start-up under way
        serve.send_signal(signal.SIGINT)
        serve.wait(60)
    finally:
        serve.kill()
        serve.wait(10)
    assert segments_of(serve.pid) == [] and temp_folders(temp) == [] and processes_naming(str(repository)) == []


def test_a_port_in_use_is_refused_in_one_line_before_anything_starts(
    live: TritonServer, tiny_onnx: Path, tmp_path: Path, tmpdir_env: tuple[Path, dict[str, str]]
) -> None:
    """The HTTP port of another Triton (which would answer "ready" with its own models), then a gRPC port held by
    a plain socket: exit 2, one line naming the port and the option, no process or temp folder left."""
    temp, env = tmpdir_env
    repository = tmp_path / "repo"
    export_triton(tiny_onnx, repository, backend="python")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        for option, port in (("--http-port", live.http_port), ("--grpc-port", taken)):
            http, grpc, metrics = free_ports(3)
            ports = {"--http-port": http, "--grpc-port": grpc, "--metrics-port": metrics, option: port}
            arguments = [str(x) for pair in ports.items() for x in pair]
            done = subprocess.run(
                [sys.executable, "-m", "cfnet", "serve", str(repository), *arguments],
                cwd=ROOT, capture_output=True, text=True, timeout=60, env=env, check=False,
            )  # fmt: skip
            assert done.returncode == 2 and "Triton ready" not in done.stdout
            assert done.stderr.strip().splitlines() == [
                f"error: port {port} is in use (Address already in use) ({option} {port}: choose another port)"
            ]
            assert temp_folders(temp) == [] and processes_naming(str(repository)) == []


def test_a_server_answering_on_its_port_counts_as_ready_only_when_it_is_this_one(live: TritonServer) -> None:
    impostor = TritonServer(live.repository, http_port=live.http_port)
    assert live.ready() and not impostor.ready()  # not started: no id of its own
    impostor.server_id = "cfnet-triton-1-other"
    assert not impostor.ready()


def test_a_plan_the_server_cannot_load_is_named_with_its_tensorrt_version(
    tmp_path: Path, tmpdir_env: tuple[Path, dict[str, str]]
) -> None:
    """Issue 22 item 3: the server is started with the version-compatible setting, and the plan it cannot load
    (this server has no TensorRT at all) is named with the TensorRT it needs."""
    temp, env = tmpdir_env
    export_triton(engine(tmp_path, "version"), tmp_path / "repo")
    http, grpc, metrics = free_ports(3)
    done = subprocess.run(
        [sys.executable, "-m", "cfnet", "serve", str(tmp_path / "repo"), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    [line] = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line.startswith("error: Triton cannot load the repository:")
    assert line.endswith("'cfnet_model' is a TensorRT 10.8.0.43 plan (compat version): serve it on a Triton with "
                         "TensorRT 10.8.0.43 or later)")  # fmt: skip
    assert temp_folders(temp) == []
