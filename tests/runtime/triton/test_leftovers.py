"""What dead `cfnet serve` servers leave (temp folders, shared memory, orphaned stub processes) is found by its
owner's pid and removed by the next server; a live owner's things, and names that are not a cfnet server's, are
left alone. Real processes, real folders (the shared-memory folder is a temp folder standing in for /dev/shm)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from runtime.triton.leftovers import make_workdir, owner, processes_in, shm_prefix, start_guard, stop_guard, sweep

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
"""A process that lives long enough; a path as its last argument puts that path on its command line."""


def dead_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.Popen(["true"])
    done.wait(10)
    return done.pid


def test_names_carry_their_owner(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path)
    assert owner(workdir.name) == os.getpid()
    assert owner(shm_prefix(workdir) + "1f0e-uuid") == os.getpid()
    assert owner("triton_python_backend_shm_region_1f0e") is None
    assert owner("cfnet-triton-abc") is None  # the name without an owner, as servers before this one wrote it


def test_the_sweep_removes_what_dead_owners_left_and_nothing_else(tmp_path: Path) -> None:
    temp, shm = tmp_path / "tmp", tmp_path / "shm"
    temp.mkdir()
    shm.mkdir()
    gone = dead_pid()
    dead = temp / f"cfnet-triton-{gone}-x1"
    (dead / "backends" / "python").mkdir(parents=True)
    live = make_workdir(temp)  # this process owns it
    (shm / f"{dead.name}-seg1").write_bytes(b"x")
    (shm / f"cfnet-triton-{gone}-x2-seg").write_bytes(b"x")  # a segment whose folder is gone already
    (shm / f"{shm_prefix(live)}seg").write_bytes(b"x")
    others = [temp / "cfnet-triton-abc", shm / "triton_python_backend_shm_region_1f0e"]
    others[0].mkdir()
    others[1].write_bytes(b"x")
    # an orphaned "stub": a process whose command line names a path inside the dead owner's folder
    orphan = subprocess.Popen([*SLEEPER, str(dead / "backends" / "python" / "stub")])
    try:
        deadline = time.monotonic() + 10  # until the child has exec'd (its command line names the folder)
        while processes_in(dead) != [orphan.pid] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_in(dead) == [orphan.pid]
        removed = sweep(temp, shm)
        assert orphan.wait(10) == -9
    finally:
        orphan.kill()
        orphan.wait(10)
    assert sorted(removed) == sorted([dead.name, f"{dead.name}-seg1", f"cfnet-triton-{gone}-x2-seg"])
    assert sorted(p.name for p in temp.iterdir()) == sorted([live.name, "cfnet-triton-abc"])
    assert sorted(p.name for p in shm.iterdir()) == sorted([f"{shm_prefix(live)}seg", others[1].name])


def test_the_guard_removes_the_server_when_its_owner_dies(tmp_path: Path) -> None:
    """An owner (a child process here) starts a guard and a "server" naming its folder, then is SIGKILLed: the
    guard kills the server after its grace and removes the folder."""
    code = (
        "import subprocess, sys, time\n"
        "from runtime.triton.leftovers import make_workdir, start_guard\n"
        f"workdir = make_workdir({str(tmp_path)!r})\n"
        "start_guard(workdir)\n"
        f"server = subprocess.Popen({SLEEPER!r} + [str(workdir / 'backends' / 'stub')], start_new_session=True)\n"
        "print(workdir, server.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    root = Path(__file__).resolve().parents[3]
    owner_process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    try:
        assert owner_process.stdout is not None
        workdir_text, server_pid = owner_process.stdout.readline().split()
        workdir = Path(workdir_text)
        assert workdir.is_dir() and processes_in(workdir) == [int(server_pid)]
        owner_process.kill()
        owner_process.wait(10)
        deadline = time.monotonic() + 30
        while (workdir.exists() or processes_in(workdir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not workdir.exists() and processes_in(workdir) == []
    finally:
        owner_process.kill()
        owner_process.wait(10)
    assert list(tmp_path.iterdir()) == []


def test_a_released_guard_ends_and_leaves_a_folder_already_removed_alone(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path)
    guard = start_guard(workdir)
    shutil.rmtree(workdir)
    stop_guard(guard)
    assert guard.returncode == 0 and list(tmp_path.iterdir()) == []
