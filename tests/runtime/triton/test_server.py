"""`cfnet serve`'s decisions before a server starts: the server's command line for a repository (a
version-compatible TensorRT plan needs the server's `version-compatible` backend setting), and ports that are in
use or repeated (no server is started here)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from export.triton import export_triton
from runtime.errors import UserError
from runtime.triton.server import TritonServer, check_ports, plan_hint
from tests.runtime.triton.helpers import engine

FLAG = "--backend-config=tensorrt,version-compatible=true"


@pytest.mark.parametrize(("compat", "flagged"), [("version", True), ("none", False), ("hardware", False)])
def test_the_server_runs_version_compatible_plans_only_when_the_repository_has_one(
    tmp_path: Path, compat: str, flagged: bool
) -> None:
    export_triton(engine(tmp_path, compat), tmp_path / "repo")
    server = TritonServer(tmp_path / "repo")
    assert server.plans == {"cfnet_model": {"tensorrt_version": "10.8.0.43", "compat": compat,
                                            "gpu_name": "NVIDIA A10", "compute_capability": "8.6"}}  # fmt: skip
    assert (FLAG in server.command(tmp_path / "cfnet-triton-1-x")) is flagged
    needs = "TensorRT 10.8.0.43 or later" if flagged else "TensorRT 10.8.0.43"
    assert plan_hint("cfnet_model", server.plans["cfnet_model"]).endswith(f"serve it on a Triton with {needs}")


def test_a_repository_without_plans_gets_no_tensorrt_setting(tiny_onnx: Path, tmp_path: Path) -> None:
    export_triton(tiny_onnx, tmp_path / "repo", backend="python")
    server = TritonServer(tmp_path / "repo")
    assert server.plans == {} and not any("tensorrt" in a for a in server.command(tmp_path / "cfnet-triton-1-x"))


def test_ports_in_use_or_repeated_are_refused() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(UserError, match=rf"^port {port} is in use .*\(--grpc-port {port}: choose another port\)"):
            check_ports("127.0.0.1", {"--http-port": 0, "--grpc-port": port})
    with pytest.raises(UserError, match="the HTTP, gRPC and metrics ports must differ"):
        check_ports("127.0.0.1", {"--http-port": 8000, "--grpc-port": 8000, "--metrics-port": 8002})
    check_ports("127.0.0.1", {"--http-port": port})  # released: free again (SO_REUSEADDR: TIME_WAIT is no matter)
