"""Scratch folders for the export steps that need files (int8 calibration, TensorRT's fp16 copy).

A folder is named `cfnet-<kind>-<pid>-XXXX` in the temp directory and removed on exit; an export killed by
SIGKILL or an unhandled SIGTERM cannot remove its own, so each new one first removes those whose process
is gone (only the user's own folders). A `cfnet serve` server's folder (`cfnet-triton-<pid>-...`) is left to
`runtime.triton.leftovers.sweep`: its server may still run, and only that sweep ends it with its folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runtime.files import process_alive
from runtime.triton.leftovers import PREFIX as SERVER_PREFIX

_NAME = re.compile(r"^cfnet-[a-z0-9]+-(\d+)-")


@contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A private temp folder for `kind` (e.g. `int8`), removed with its contents on exit."""
    remove_stale()
    with tempfile.TemporaryDirectory(prefix=f"cfnet-{kind}-{os.getpid()}-") as tmp:
        yield Path(tmp)


def remove_stale(root: str | Path | None = None) -> list[Path]:
    """Remove the scratch folders under `root` (default: the temp directory) of processes that no longer run
    (not a server's: see the module)."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob("cfnet-*-*-*"):
        match = _NAME.match(folder.name)
        try:
            mine = folder.is_dir() and not folder.is_symlink() and folder.stat().st_uid == os.getuid()
        except OSError:  # removed meanwhile by another process
            continue
        if match and mine and not folder.name.startswith(SERVER_PREFIX) and not process_alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
