"""What a `cfnet serve` server leaves on the machine, named after the process that owns it, and its removal.

A server's temp folder is `<tmp>/cfnet-triton-<owner pid>-<random>` (its private backend folder, the copied
Python-backend stub, the log) and its shared-memory segments are `/dev/shm/<folder name>-<uuid>` (the Python
backend's `shm-region-prefix-name`). The server and its stubs name paths inside the folder on their command
lines (`--backend-directory`, the stub's own path), so they are found through /proc by the folder alone.

Two things remove them when the owner dies without cleaning up (SIGKILL): a guard process, started beside the
server, that waits for the owner's end (the write end of its stdin pipe closes with the owner, however it dies)
and then removes the server; and, should the guard die too, the next server started on the machine, which sweeps
what owners that are gone left (`sweep`). A live owner's server is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "cfnet-triton-"
SHM = Path("/dev/shm")
STARTED = ".started"
GRACE = 5.0
"""Seconds the guard leaves a server whose owner died to end by itself (it got SIGTERM through
PR_SET_PDEATHSIG) before the rest is killed: its Python-backend stubs ignore SIGTERM, and a stub still
starting up never notices that its server is gone."""
_OWNED = re.compile(rf"^{re.escape(PREFIX)}(?P<pid>\d+)-")


def make_workdir(tempdir: str | Path | None = None) -> Path:
    """A new temp folder for a server owned by this process (in `tempdir`, default the system's temp folder)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=tempdir))
    (workdir / STARTED).touch()  # its time is the server's start (the folder's own changes with its files)
    return workdir


def shm_prefix(workdir: Path) -> str:
    """The Python backend's shared-memory prefix for the server of `workdir`."""
    return f"{workdir.name}-"


def owner(name: str) -> int | None:
    """The owner's pid in a temp folder's or shared-memory segment's name (None: not a cfnet server's)."""
    match = _OWNED.match(name)
    return int(match["pid"]) if match else None


def processes_in(workdir: Path) -> list[int]:
    """Live processes whose command line names a path inside `workdir` (the server and its stubs)."""
    inside = f"{workdir}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if inside in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def remove_server(workdir: Path, grace: float = 0.0, shm: Path = SHM) -> list[str]:
    """End every process of the server of `workdir` (SIGKILL after `grace` s), then remove its shared-memory
    segments and the folder; returns the names of the segments removed."""
    deadline = time.monotonic() + grace
    while processes_in(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    deadline = time.monotonic() + 5.0
    while (members := processes_in(workdir)) and time.monotonic() < deadline:
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(shm):
            if name.startswith(shm_prefix(workdir)):
                with contextlib.suppress(OSError):
                    (shm / name).unlink()
                    removed.append(name)
    removed += remove_python_envs(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    return removed


def remove_python_envs(workdir: Path) -> list[str]:
    """The Python backend makes an empty `/tmp/python_env_XXXXXX` at start (a fixed path: TMPDIR does not move it)
    and removes it only at a clean stop. It names no owner, so the empty ones made since `workdir` was (the
    server's start) go with it; a folder with anything in it is left alone."""
    try:
        since = (workdir / STARTED).stat().st_mtime - 1.0
    except OSError:
        return []
    removed = []
    for env in Path("/tmp").glob("python_env_*"):
        with contextlib.suppress(OSError):
            if env.is_dir() and env.stat().st_mtime >= since and not any(env.iterdir()):
                env.rmdir()
                removed.append(env.name)
    return removed


def sweep(tempdir: str | Path | None = None, shm: Path = SHM) -> list[str]:
    """Remove what servers whose owner is gone left: their processes, shared memory and temp folders; returns
    the names removed. Another user's, and a live owner's, are left alone."""
    from runtime.files import process_alive  # here, not at the top: the guard process imports this module

    tempdir = Path(tempdir or tempfile.gettempdir())
    removed = []
    for folder in (tempdir, shm):
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                pid = owner(name)
                if pid is None or process_alive(pid):
                    continue
                if folder == tempdir:
                    removed += [name, *remove_server(tempdir / name, shm=shm)]
                    continue
                with contextlib.suppress(OSError):  # a segment whose temp folder is gone already
                    (shm / name).unlink()
                    removed.append(name)
    return removed


def start_guard(workdir: Path) -> subprocess.Popen[bytes]:
    """The guard of `workdir`'s server: it removes the server once this process's end closes its stdin. Close it
    (`stop_guard`) after stopping the server; the guard is in a session of its own, away from the terminal's
    Ctrl-C and from signals sent to this process's group."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen(
        [sys.executable, "-c", "from runtime.triton.leftovers import guard; guard()", str(workdir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def stop_guard(process: subprocess.Popen[bytes]) -> None:
    """Release the guard (its server is stopped and removed) and wait for it."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(GRACE + 10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def guard() -> None:
    """The guard process's body (`start_guard`): wait for the end of stdin, then remove the server."""
    workdir = Path(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()
    remove_server(workdir, GRACE)
