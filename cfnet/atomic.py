"""Atomic outputs: write to a temp file in the destination folder, then `os.replace` it into place.

Used by cfnet, export and bench (the runtime keeps its own `runtime/files.py`: it may not import cfnet).
`make_folder` reports a regular file in the way of an output's folder as one line.

Temp names carry the writing process's id, `.<stem>.<pid>.t<random>.part<suffix>`: the pattern of the runtime's
temp files, whose sweep (`runtime.files.remove_stale_parts`) removes those of dead processes. cfnet may not
import the runtime, so the command line installs that sweep here (`sweep_stale_with`); each folder is then swept
before the first write into it.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from cfnet.errors import UserError

_sweep: Callable[[Path], object] | None = None


def sweep_stale_with(sweep: Callable[[Path], object] | None) -> None:
    """Call `sweep(folder)` before writing into a folder (None: no sweep, the default)."""
    global _sweep
    _sweep = sweep


def sweep_stale(folder: str | Path) -> None:
    """Remove the temp files dead processes left in `folder`, with the installed sweep (if any)."""
    if _sweep is not None:
        _sweep(Path(folder))


FULL_DISK = 4 << 20  # bytes free below which a writer's failure is taken for a full disk


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` with the same suffix; it replaces `path` on success, vanishes on failure.

    The suffix is kept because some writers (OpenCV's VideoWriter, matplotlib) choose the format by it.
    """
    path = Path(path)
    make_folder(path.parent)
    sweep_stale(path.parent)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.t", suffix=f".part{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~umask())  # mkstemp makes it private; outputs are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        failure = _write_error(exc, path, tmp)
        if failure is None:
            raise
        raise failure from exc
    finally:
        tmp.unlink(missing_ok=True)


def _write_error(exc: Exception, path: Path, tmp: Path) -> OSError | None:
    """The failure to write `path` named by it, not by its temp file: an OSError of the write, or any error of a
    writer that hides the OS's (torch.save raises RuntimeError on a full disk) where the disk is full."""
    if isinstance(exc, OSError):
        mine = exc.errno is not None and exc.filename in (None, str(tmp))
        return OSError(exc.errno, exc.strerror, str(path)) if mine else None
    if shutil.disk_usage(path.parent).free < FULL_DISK:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def make_folder(folder: str | Path) -> Path:
    """Create `folder` and its parents; a regular file in the way is a `UserError`, not an `OSError` traceback."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError("cannot create the output folder: a file of that name is in the way", str(folder)) from None
    return folder


@cache
def umask() -> int:
    """The process umask, read once: `os.umask` can only be read by setting it, which races with other threads."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (no half-written file survives any failure) and return the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)
