"""`cfnet serve`: run the `tritonserver` binary of the `nvidia-pytriton` wheel on a model repository.

The wheel's server has only the Python backend and runs on CPU-only Linux. Set-up it needs (measured):
`LD_LIBRARY_PATH` holds the wheel's `nvidia_pytriton.libs` and the running Python's own `lib` folder (else the
stub crashes on `_thread.RLock._recursion_count`); the backend folder holds the stub built for the running
Python as `triton_python_backend_stub` (a private backend folder is assembled in a temp dir: the wheel's files
are never changed); the running Python's `bin` is first on `PATH`, so the stub imports this environment's numpy,
OpenCV and ONNX Runtime. The server runs in its own process group: stopping it ends the stubs too; it is
also told to end when the process that started it dies (even killed), and a guard process removes what is left
of it then (stubs still starting up, shared memory, the temp folder: `runtime.triton.leftovers`), so nothing of a
server outlives its owner. Before starting, the ports are checked free, and the server that answers is checked
to be this one (its `--id`, read back from `/v2`).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from runtime.errors import UserError
from runtime.processes import die_with_parent
from runtime.triton.config import ENGINE_PARAMETERS
from runtime.triton.leftovers import make_workdir, remove_server, shm_prefix, start_guard, stop_guard, sweep

INSTALL_HINT = "pip install 'cfnet[serve]' (the nvidia-pytriton wheel ships the tritonserver binary)"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that are free on `host` now (bound to port 0, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Refuse ports (by option name) that are the same or that something on `host` listens on already (a bind
    test, with SO_REUSEADDR as servers bind: a port in TIME_WAIT is free)."""
    if len(set(ports.values())) < len(ports):
        raise UserError("the HTTP, gRPC and metrics ports must differ", " ".join(f"{o} {p}" for o, p in ports.items()))
    for option, port in ports.items():
        try:
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        except socket.gaierror as exc:
            raise UserError(f"cannot resolve host '{host}': {exc.strerror}", "--host") from None
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                what = f"port {port} is in use" if exc.errno == errno.EADDRINUSE else f"cannot bind {host}:{port}"
                raise UserError(f"{what} ({exc.strerror})", f"{option} {port}: choose another port") from None


def batch_counters(metrics: str, model: str) -> tuple[float, float]:
    """`nv_inference_count` and `nv_inference_exec_count` of `model` (any version) in Prometheus text `metrics`."""
    counts = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
    for line in metrics.splitlines():
        name, _, rest = line.partition("{")
        if name in counts and f'model="{model}"' in rest.partition("}")[0]:
            counts[name] += float(rest.rpartition("}")[2].split()[0])
    return counts["nv_inference_count"], counts["nv_inference_exec_count"]


def repository_plans(repository: Path) -> dict[str, dict[str, str]]:
    """The TensorRT plans of `repository` by model name, each with the engine fields its config's `parameters`
    carry (`runtime.triton.config.ENGINE_PARAMETERS`). A config that does not parse is left to the server."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    plans = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        config = model_config_pb2.ModelConfig()
        try:
            text_format.Parse(path.read_text(), config)
        except (text_format.ParseError, OSError, UnicodeDecodeError):
            continue
        if config.platform == "tensorrt_plan" or config.backend == "tensorrt":
            fields = {k: v.string_value for k, v in config.parameters.items() if k in ENGINE_PARAMETERS}
            plans[config.name or path.parent.name] = fields
    return plans


def plan_hint(model: str, fields: dict[str, str]) -> str:
    """What a server needs to load the TensorRT plan `model` (for the error that it could not)."""
    version, compat = fields.get("tensorrt_version", "?"), fields.get("compat", "none")
    needs = f"{version} or later" if compat == "version" else version
    return f"'{model}' is a TensorRT {version} plan (compat {compat}): serve it on a Triton with TensorRT {needs}"


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def pytriton_home() -> tuple[Path, Path]:
    """(the wheel's `pytriton/tritonserver` folder, its `nvidia_pytriton.libs` folder)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the tritonserver binary is not installed", INSTALL_HINT)
    package = Path(next(iter(spec.submodule_search_locations)))
    home, libs = package / "tritonserver", package.parent / "nvidia_pytriton.libs"
    if not (home / "bin" / "tritonserver").is_file():
        raise UserError("the nvidia-pytriton wheel has no tritonserver binary", str(home))
    return home, libs


def backend_folder(home: Path, target: Path) -> Path:
    """Assemble `target/python`: the wheel's Python backend plus the stub built for the running Python."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise UserError(f"the nvidia-pytriton wheel has no Python-backend stub for Python {version}", str(stub.parent))
    python = target / "python"
    python.mkdir(parents=True)
    for item in (home / "backends" / "python").iterdir():
        if item.is_file():
            (python / item.name).symlink_to(item)
    shutil.copy2(stub, python / "triton_python_backend_stub")
    return target


def server_environment(libs: Path) -> dict[str, str]:
    """The environment the server and its stubs need (see the module docstring)."""
    env = dict(os.environ)
    python_lib = sysconfig.get_config_var("LIBDIR") or str(Path(sys.base_prefix) / "lib")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), python_lib, env.get("LD_LIBRARY_PATH")) if p)
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH")) if p)
    return env


class TritonServer:
    """A `tritonserver` process on `repository`; a context manager (`stop()` on exit).

    `start(timeout)` waits until the server is ready (every model loaded) or fails with its log's last lines.
    """

    def __init__(
        self,
        repository: str | Path,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        log_verbose: int = 0,
    ) -> None:
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise UserError("model repository not found", str(repository))
        if not any(self.repository.glob("*/config.pbtxt")):
            raise UserError("no model in the repository (write one with `cfnet export triton`)", str(repository))
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.log_verbose = log_verbose
        self.process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None  # the started server's temp folder (runtime.triton.leftovers)
        self._guard: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None  # the server's log, in the temp folder of a started server
        self.server_id: str | None = None  # the started server's `--id`, unique: the temp folder's name
        self.plans = repository_plans(self.repository)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, workdir: Path) -> list[str]:
        """The server's command line; its backends, id and shared memory are those of the temp folder `workdir`."""
        home, _ = pytriton_home()
        return [
            str(home / "bin" / "tritonserver"),
            f"--id={workdir.name}",
            f"--model-repository={self.repository}",
            f"--backend-directory={workdir / 'backends'}",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix(workdir)}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--log-verbose={self.log_verbose}",
            # a version-compatible plan carries its own lean runtime, which the server must be allowed to run
            *(["--backend-config=tensorrt,version-compatible=true"]
              if any(p.get("compat") == "version" for p in self.plans.values()) else []),
        ]  # fmt: skip

    def start(self, timeout: float = 120.0) -> TritonServer:
        """Launch the server and wait (at most `timeout` s) until it is ready. What servers of owners that are gone
        left is removed first; ports in use are refused before anything starts."""
        home, libs = pytriton_home()
        check_ports(self.host, {"--http-port": self.http_port, "--grpc-port": self.grpc_port,
                                "--metrics-port": self.metrics_port})  # fmt: skip
        sweep()
        self._workdir = make_workdir()
        try:
            self._guard = start_guard(self._workdir)
            self.server_id, self.log_path = self._workdir.name, self._workdir / "tritonserver.log"
            backend_folder(home, self._workdir / "backends")
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    self.command(self._workdir),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=server_environment(libs),
                    start_new_session=True,
                    # SIGTERM: tritonserver stops its models and stubs itself; the guard kills what is left
                    preexec_fn=die_with_parent(signal.SIGTERM),
                )
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        """Whether this server answers ready (HTTP `/v2/health/ready`), not another one on its port: the server
        metadata's name (`/v2`) is this server's `--id`."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2", timeout=2) as response:
                if self.server_id is None or json.loads(response.read()).get("name") != self.server_id:
                    return False
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError, AttributeError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = self.process is None or self.process.poll() is not None
            failure = self.load_failure()  # first: a server that cannot load a model may exit right after
            if failure:
                where = str(self.repository)
                plan = next((m for m in self.plans if f"'{m}'" in failure), None)
                if plan is not None:
                    where += f": {plan_hint(plan, self.plans[plan])}"
                elif "unable to find backend library" in failure:
                    where += ": this server has only the Python backend; export with --backend python"
                raise UserError(f"Triton cannot load the repository: {failure}", where)
            if exited:
                raise UserError(f"tritonserver exited during start-up: {self.log_tail()}", str(self.repository))
            if self.ready():
                return
            time.sleep(0.2)
        raise UserError(f"tritonserver not ready after {timeout:.0f} s: {self.log_tail()}", str(self.repository))

    def log_lines(self) -> list[str]:
        """The server log so far (none before `start` or after `stop`)."""
        if self.log_path is None:
            return []
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def load_failure(self) -> str | None:
        """The first model-load failure the log reports (a model the server cannot load keeps it from ever getting
        ready: the HTTP endpoint comes up only after loading, and a failed Python stub is retried for minutes)."""
        text = self.log_lines()
        marks = ("Failed to", "failed to load", "Invalid argument", "UNAVAILABLE:")
        failed = next((line for line in text if any(m in line for m in marks)), None)
        return None if failed is None else " ".join(failed.split("]", 1)[-1].split())[:400]

    def log_tail(self, lines: int = 3) -> str:
        """The last error-looking lines of the server log (for one-line error messages)."""
        text = self.log_lines()
        harmless = ("CudaDriverHelper", "NVML", "DCGM", "GPU metrics")  # no GPU here: expected, harmless
        errors = [line.strip() for line in text if line.startswith("E") and not any(h in line for h in harmless)]
        return " | ".join((errors or text)[-lines:])[:600] or "no log"

    def models(self) -> list[tuple[str, str, str]]:
        """(name, state, reason) of each model of the repository, from the server's repository index (empty
        while the server does not answer)."""
        request = urllib.request.Request(f"{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                index = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return []
        return [(m["name"], m.get("state", "?"), " ".join(str(m.get("reason", "")).split())[:300]) for m in index]

    def batch_counters(self, model: str) -> tuple[float, float]:
        """(inferences, executions) of `model` so far, from the server's Prometheus metrics: their ratio is the
        average batch the dynamic batcher formed."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return batch_counters(response.read().decode(), model)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM the server's process group, SIGKILL it after `grace` s, remove its shared memory and temp folder;
        returns the server's exit code."""
        code = None
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                code = self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                code = self.process.wait(5)
            with contextlib.suppress(ProcessLookupError, PermissionError):  # stubs of a server that died
                os.killpg(self.process.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0  # a killed process lingers a moment: return once it is gone
            while group_members(self.process.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            self.process = None
        if self._workdir is not None:
            remove_server(self._workdir)
            self._workdir = self.log_path = None
        if self._guard is not None:
            stop_guard(self._guard)
            self._guard = None
        return code

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
