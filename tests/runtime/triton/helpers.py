"""Helpers of the Triton tests: live processes by command line, a `cfnet serve` process, a slow-loading model, an
engine file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from export.triton import export_triton
from runtime.triton.server import free_ports
from tests.runtime.helpers import tiny_metadata

ROOT = Path(__file__).resolve().parents[3]
SLOW_MODEL = '''import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(300)

    def execute(self, requests):
        return []
'''


def live_processes() -> dict[int, str]:
    """Command lines of the live (not zombie) processes other than this one, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found[int(entry.name)] = cmdline
    return found


def processes_naming(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (the server and its stubs name the repository)."""
    return [cmdline for cmdline in live_processes().values() if text in cmdline]


def pids_naming(*texts: str) -> list[int]:
    """Pids of the live processes whose command line contains every one of `texts`."""
    return [pid for pid, cmdline in live_processes().items() if all(t in cmdline for t in texts)]


def add_slow_model(repository: Path) -> Path:
    """A Python-backend model `slow` in `repository` whose initialisation takes minutes: a server on it stays in
    start-up, its stub running; returns the path its stub names."""
    folder = repository / "slow"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(
        'name: "slow"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "x", data_type: TYPE_FP32, dims: [1] }]\n'
        'output [{ name: "y", data_type: TYPE_FP32, dims: [1] }]\n'
    )
    (folder / "1" / "model.py").write_text(SLOW_MODEL)
    return folder / "1" / "model.py"


def start_serve(
    model: Path, tmp_path: Path, env: dict[str, str] | None = None, slow: bool = False
) -> tuple[Path, int, int, subprocess.Popen[str]]:
    """`model`'s repository (Python backend; `slow`: with a model that never finishes loading) under `tmp_path`,
    served by a `cfnet serve` process on free ports: (repository, gRPC port, metrics port, the process with its
    stdout and stderr merged)."""
    repository = tmp_path / "repo"
    export_triton(model, repository, backend="python")
    if slow:
        add_slow_model(repository)
    http, grpc, metrics = free_ports(3)
    serve = subprocess.Popen(
        [sys.executable, "-m", "cfnet", "serve", str(repository), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    return repository, grpc, metrics, serve


def engine(folder: Path, compat: str) -> Path:
    """An engine file as `cfnet build-engine --compat COMPAT` leaves it (opaque plan bytes, its sidecar)."""
    path = folder / f"{compat}.engine"
    path.write_bytes(b"plan bytes")
    sidecar = {"metadata": tiny_metadata(), "tensorrt_version": "10.8.0.43", "compat": compat,
               "gpu_name": "NVIDIA A10", "compute_capability": [8, 6], "profile": {"max": [2, 3, 96, 128]}}  # fmt: skip
    path.with_name(f"{path.name}.json").write_text(json.dumps(sidecar))
    return path
