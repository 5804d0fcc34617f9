"""Expected failures of the torch-free runtime (it may not import `cfnet.errors`), and the one line for an output
that cannot be written."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """An expected failure: the CLI prints `error: <what> (<where>)` and exits 2, without a traceback."""

    def __init__(self, what: str, where: str | None = None) -> None:
        self.what = what
        self.where = where
        super().__init__(f"{what} ({where})" if where else what)


WRITE_FAILURES = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
    errno.ENOTDIR: "a parent is not a folder",
}
"""The errors of an output that cannot be written, with the words of the one error line."""

# a writer's temp name: `.NAME.tmp-XXXX[.ext]` (cfnet.atomic), `.STEM.PID.[KIND.]part[.ext]` (runtime.files)
_TEMP = re.compile(r"^\.(?P<name>.+?)\.(?:tmp-\w+|\d+\.(?:[\w-]+\.)?part)(?P<suffix>\.\w+)?$")


def output_name(path: str | os.PathLike[str]) -> str:
    """The output a path stands for: a writer's temp file or folder (and anything inside it) is shown as the
    output it becomes (`out/.m.tmp-x1y2.onnx` -> `out/m.onnx`)."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if match := _TEMP.match(part):
            return str(Path(*parts[:i], match["name"] + (match["suffix"] or "")))
    return str(path)


def write_failure(exc: OSError) -> str | None:
    """`cannot write PATH (read-only file system)` for an output that could not be written (read-only, no
    permission, disk full, a file where a folder must be), else None. `shutil.Error` (copytree) carries the
    OS's error as text: its first failure is used."""
    code, path = exc.errno, exc.filename
    if code is None and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        first = exc.args[0][0]
        found = re.search(r"\[Errno (\d+)\]", str(first[-1])) if isinstance(first, tuple) else None
        code, path = (int(found[1]), first[1]) if found else (None, None)
    if code not in WRITE_FAILURES:
        return None
    if path is None:  # a writer that does not say which file: `writing` names it where commands write
        return f"cannot write the output ({WRITE_FAILURES[code]})"
    if code in (errno.EACCES, errno.EPERM) and os.path.isfile(path) and not os.access(path, os.R_OK):
        return f"cannot read {path} (permission denied)"
    return f"cannot write {output_name(path)} ({WRITE_FAILURES[code]})"


@contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """An OSError of a write that names no file (`Path.write_text` on a full disk) is given `path`, the output
    being written, so that `write_failure` can say which."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None or exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
