"""Child processes that do not outlive the process that started them.

`die_with_parent()` is a `Popen(preexec_fn=...)`: Linux signals the child when its parent dies, however it dies
(SIGKILL included; `prctl(PR_SET_PDEATHSIG)`, kept across `exec`). `stop(children)` ends them in order on the
way out (SIGTERM, a grace period, then SIGKILL), for a `finally`. Used by `cfnet bench --streams` and the Triton
server launcher (`cfnet serve`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send the child `sig` when this process dies (None off Linux).

    The kernel ties it to the starting *thread*: start the child from a thread that outlives it (the main
    thread). SIGKILL by default: a child that handles SIGTERM slowly, or ignores it, still goes.
    """
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child only calls it

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the parent died before the request was made: no one will send it
            os.kill(os.getpid(), sig)

    return arm


def stop(children: Iterable[subprocess.Popen[Any]], grace: float = 5.0) -> None:
    """End the `children` still running: SIGTERM, then SIGKILL for those not gone after `grace` seconds (their
    pipes are drained meanwhile, so that none blocks writing to a full one)."""
    running = [child for child in children if child.poll() is None]
    for child in running:
        child.terminate()
    deadline = time.monotonic() + grace
    for child in running:
        try:
            child.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
