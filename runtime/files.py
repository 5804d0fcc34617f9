"""Files in and out: outputs checked up front and written atomically (temp file, then `os.replace`); images
read with the decoder's own chatter (`libpng error: ...`) folded into the one error line.

Temp names carry the writing process's id (`.<name>.<pid>.[t<random>.]part<suffix>`), so that the temp files a
killed process (SIGKILL, power loss) left behind are recognised and removed by the next run writing to that folder.
The random part starts with a letter, so that a name's pid is never ambiguous. `cfnet/atomic.py` names its temp
files by the same pattern (it may not import this module; a test ties the two), and `cfnet`'s command line has
its writes sweep with `remove_stale_parts`: one sweep for every package.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from runtime.errors import UserError, write_failure

_UMASK = os.umask(0o022)  # read once at import: `os.umask` is read by setting it, which races with threads
os.umask(_UMASK)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def check_output(path: str | Path, *, folder: bool = False) -> Path:
    """Refuse, before anything is computed or written, an output that cannot be created: `path` is a folder
    where a file is wanted (or a file where a folder is), or an existing parent of it is a regular file."""
    path = Path(path)
    if not folder and path.is_dir():
        raise UserError("output path is a folder", str(path))
    if folder and path.exists() and not path.is_dir():
        raise UserError("output folder is a file", str(path))
    blocking = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    if blocking is not None and not blocking.is_dir():
        raise UserError(f"cannot create the output: {blocking} is a file, not a folder", str(path))
    return path


class Output(NamedTuple):
    """An output a command is about to write: the path as the user gave it (a trailing `/` kept), the option
    that names it, whether it is a folder, the extensions a file may have, and whether the folder is replaced
    whole (then no input may lie inside it)."""

    path: str | Path
    option: str = "--out"
    folder: bool = False
    suffixes: tuple[str, ...] = ()
    replaced: bool = False


def names_folder(text: str | Path) -> bool:
    """Whether a path as typed names a folder: `out/` (a trailing separator) does, whether or not it exists."""
    return isinstance(text, str) and text.endswith(("/", os.sep))


def check_outputs(outputs: Iterable[Output | None], inputs: Iterable[str | Path | None] = ()) -> list[Path]:
    """The one check of every writing command, before anything is computed or written: each output can be
    created (`check_output`), a file has one of its extensions and no trailing `/`, no output is one of the
    inputs (the same file through a symlink, a relative path or a hard link: compared by device and inode),
    no input lies in a folder that is replaced whole, and no two outputs are the same path. Returns the paths."""
    given = [o for o in outputs if o is not None]
    sources = [(Path(p), _identity(p)) for p in inputs if p is not None and str(p)]
    sources = [(p, key) for p, key in sources if key is not None]  # an input that does not exist cannot be lost
    seen: dict[object, Output] = {}
    paths = []
    for out in given:
        path = check_output(out.path, folder=out.folder)
        if not out.folder:
            if names_folder(out.path):
                raise UserError(f"{out.option} ends with '/', a folder; it must name a file", str(out.path))
            if out.suffixes and path.suffix.lower() not in out.suffixes:
                wanted = " or ".join(filter(None, [", ".join(out.suffixes[:-1]), out.suffixes[-1]]))
                found = f", not {path.suffix}" if path.suffix else ": it has no extension"
                raise UserError(f"{out.option} must end in {wanted}{found}", str(path))
        _check_writable(path, out.folder)
        key = _identity(path)
        for source, source_key in sources:
            if key is not None and key == source_key and not out.folder:
                raise UserError(
                    f"the output would overwrite the input {source}: choose another {out.option}", str(out.path)
                )
            if out.replaced and source.resolve().is_relative_to(path.resolve()):
                raise UserError(f"{out.option} would be replaced with the input {source} inside it", str(out.path))
        for k in {key, path.resolve()} - {None}:
            if k in seen:
                other = seen[k].option
                both = f"{other} and {out.option} name" if other != out.option else f"two {other} outputs are"
                raise UserError(f"{both} the same path: one would overwrite the other", str(out.path))
            seen[k] = out
        paths.append(path)
    return paths


def _check_writable(path: Path, folder: bool) -> None:
    """Refuse an output whose folder (the nearest one that exists) cannot be written: a read-only file system
    or no permission, in the words of `runtime.errors.write_failure`, before anything is computed."""
    existing = next((p for p in [*([path] if folder else []), *path.parents] if p.exists()), None)
    if existing is None or not existing.is_dir() or os.access(existing, os.W_OK | os.X_OK):
        return
    code = errno.EROFS if os.statvfs(existing).f_flag & os.ST_RDONLY else errno.EACCES
    raise UserError(str(write_failure(OSError(code, os.strerror(code), str(path)))))


def _identity(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of what `path` names, through symlinks; None where nothing exists."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


_PART = re.compile(r"^\..+\.(?P<pid>\d+)\.(?:[\w-]+\.)?part(?:\.\w+)?$")
_swept: set[Path] = set()
_sweep_lock = threading.Lock()


def part_path(path: str | Path) -> Path:
    """The temp name of `path` for this process: `.<stem>.<pid>.part<suffix>` beside it (the suffix is kept
    for writers that pick their format by extension). Stale temp files of dead processes are removed first."""
    path = Path(path)
    remove_stale_parts(path.parent)
    return path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")


def part_pid(name: str) -> int | None:
    """The id of the process that writes the temp file called `name` (None: not a temp name)."""
    match = _PART.match(name)
    return int(match["pid"]) if match else None


def remove_stale_parts(folder: Path) -> list[Path]:
    """Remove the temp files in `folder` whose writing process is gone (once per folder and process)."""
    folder = folder.resolve()
    with _sweep_lock:
        if folder in _swept:
            return []
        _swept.add(folder)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        pid = part_pid(name)
        if pid is not None and not process_alive(pid):
            try:
                (folder / name).unlink()
                removed.append(folder / name)
            except OSError:
                pass
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (this one does; another user's counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (no half-written file on any failure)."""
    path = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.t", suffix=".part", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it private; outputs are ordinary files
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (None, tmp):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # named by the output, not its temp file
        raise
    return path


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Encode `image` by the suffix of `path` (`.png`: lossless, masks keep their ids) and write it atomically."""
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix or ".png", image)
    except cv2.error:  # an extension OpenCV has no encoder for
        ok = False
    if not ok:
        raise UserError("cannot encode image", str(path))
    return write_bytes(path, encoded.tobytes())


def image_files(paths: list[Path] | tuple[Path, ...]) -> list[Path]:
    """`paths` with each folder replaced by the images directly in it (sorted; an empty folder is refused)."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder", str(path))
        files.extend(found)
    return files


def read_image(path: str | Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Decode the image at `path`; a missing, truncated or corrupt file is a `UserError` that carries the
    decoder's own message (libpng and libjpeg print theirs on stderr, which is captured for it: what other
    threads write to file descriptor 2 during the decode lands there too, so the stream's threads don't use it)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("image not found", str(path))
    data = np.fromfile(path, dtype=np.uint8)
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            image = cv2.imdecode(data, flags) if data.size else None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        chatter = captured.read().decode(errors="replace").strip().splitlines()
    if image is None:
        detail = f": {chatter[-1].strip()}" if chatter else " (truncated, corrupt or not an image)"
        raise UserError(f"cannot read image{detail}", str(path))
    return image
