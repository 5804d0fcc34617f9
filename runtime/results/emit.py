"""JSON lines out: records written as they come, to a file, stdout (`-`) or a file per stream (`DIR/`).

Nothing is created before the first line: the target is checked up front (a path that cannot be written is a
`UserError` before the first frame) and its folder and files are made when the first record comes, so a run that
fails before its first frame leaves nothing behind. A line is written whole or not at all: each is one `write`
to a file opened for appending, unbuffered, so a reader following the file (`tail -f`, a log shipper) never sees
half a line, and a write that fails (a full disk) is cut back to the last whole line before the error is raised.
Files are appended to, never truncated: a restarted run continues its file (`frame` restarts at 0; `wall_time`
tells the runs apart). Writers of several streams share one `JsonLines` (a lock per file). Nothing is fsync'ed
per line: a power cut may lose the last lines the kernel had not written, never leave a broken one behind in the
middle.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from runtime.errors import UserError
from runtime.files import check_output
from runtime.results import records

STDOUT = "-"
SUFFIX = ".jsonl"


def is_folder_target(target: str | Path) -> bool:
    """Whether `target` means a file per stream: it ends with a path separator or is an existing folder."""
    text = str(target)
    return text.endswith(("/", os.sep)) or Path(text).is_dir()


class JsonLines:
    """`write(record)` appends `record` as one JSON line to the target's file for `record["stream"]`.

    `target`: `-` (stdout), a folder (`DIR/` or an existing folder: `DIR/<stream>.jsonl` per stream) or a file
    (every stream's lines, each naming its stream). The target is checked at once (a path that cannot be
    written is a `UserError`) and created with the first line. A failed write raises `WriteFailed`.
    """

    def __init__(self, target: str | Path, option: str = "--emit") -> None:
        self.target, self.option = str(target), option
        self._files: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._folder: Path | None = None
        self._stdout: TextIO | None = None
        if self.target == STDOUT:
            self._stdout = sys.stdout
        elif is_folder_target(self.target):
            self._folder = check_output(self.target, folder=True)
            _check_writable(self._folder, f"{option} {self.target}")
        else:
            path = check_output(self.target)
            if path.exists() and not os.access(path, os.W_OK):
                raise UserError("cannot write to the file (permission denied)", f"{option} {self.target}")
            _check_writable(path.parent, f"{option} {self.target}")

    def path(self, stream: str) -> Path | None:
        """The file `stream`'s lines go to (None for stdout)."""
        if self._stdout is not None:
            return None
        if self._folder is not None:
            return self._folder / ((re.sub(r"[^\w.-]+", "_", stream).strip("._") or "stream") + SUFFIX)
        return Path(self.target)

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` as its one line (`runtime.results.records.line`)."""
        line = records.line(record)
        if self._stdout is not None:
            with self._guard:
                self._stdout.write(line.decode())
                self._stdout.flush()
            return
        key = str(record.get("stream", "")) if self._folder is not None else self.target
        with self._guard:
            if key not in self._files:
                path = self.path(key)
                assert path is not None
                self._open(key, path)
            fd, lock = self._files[key], self._locks[key]
        with lock:
            _append(fd, line, self.path(key), self.option)

    def _open(self, key: str, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise WriteFailed(f"cannot open for writing: {exc.strerror}", f"{self.option} {path}", exc.errno) from None
        self._files[key], self._locks[key] = fd, threading.Lock()

    def close(self) -> None:
        with self._guard:
            for fd in self._files.values():
                os.close(fd)
            self._files.clear()

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class WriteFailed(UserError):
    """A result line that could not be written; `errno`: the system's error number (`ENOSPC` for a short
    write, which a full disk causes)."""

    def __init__(self, what: str, where: str, errno: int | None) -> None:
        super().__init__(what, where)
        self.errno = errno


def _check_writable(folder: Path, where: str) -> None:
    """`folder`, or the nearest of its parents that exists, must be a folder this process may create files in."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into the folder {existing} (permission denied)", where)


def _append(fd: int, line: bytes, path: Path | None, option: str) -> None:
    """One `write` of `line`; a short or failed write is truncated back to where the line began."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        written = os.write(fd, line)
    except OSError as exc:
        written, error, number = -1, exc.strerror, exc.errno
    else:
        error, number = "short write (disk full?)", errno.ENOSPC
    if written == len(line):
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, start)
    raise WriteFailed(f"cannot write a result line: {error}", f"{option} {path}", number)
