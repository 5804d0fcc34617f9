"""Streams added and removed while a run goes on: `StreamControl` (used by the live view's control API and by
SIGHUP's reload of a sources file) and sources files (`cfnet stream --sources FILE`).

A sources file holds one source a line, `SOURCE [name=NAME]` (shell quoting for paths with spaces; `#` starts
a comment; blank lines are skipped). A relative file path is relative to the sources file's folder. A line
without `name=` is named as `runtime.video.stream_names` names a source. A reload applies the file as a whole
or not at all: a bad line, a duplicate name or a missing file keeps the running set and logs one warning.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import runtime.log as log
from runtime.errors import UserError
from runtime.stream.pipeline import Pipeline, check_name
from runtime.stream.state import Stream
from runtime.video import is_live, stream_names

ENDING_WAIT_S = 30.0  # how long an added stream waits for an ending one of its name to finalise its outputs


@dataclass(frozen=True)
class SourceLine:
    """One line of a sources file."""

    source: str
    name: str
    line: int


def read_sources(path: Path) -> list[SourceLine]:
    """The sources of a sources file (see the module doc); a bad line or a duplicate name is a `UserError`
    naming `FILE:LINE`."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the sources file ({getattr(exc, 'strerror', None) or exc})", str(path)) from None
    entries: list[tuple[str, str | None, int]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}"
        try:
            tokens = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise UserError(f"bad line in the sources file: {exc}", where) from None
        if not tokens:
            continue
        names = [t.removeprefix("name=") for t in tokens if t.startswith("name=")]
        others = [t for t in tokens if not t.startswith("name=")]
        if len(others) != 1 or len(names) > 1:
            raise UserError("bad line in the sources file: expected SOURCE [name=NAME]", where)
        source = others[0]
        if not is_live(source) and not Path(source).is_absolute():
            source = str(path.parent / source)
        entries.append((source, check_name(names[0], where) if names else None, number))
    seen: dict[str, int] = {}
    for _, name, number in entries:
        if name is not None and name in seen:
            raise UserError(f"duplicate stream name '{name}' (also on line {seen[name]})", f"{path}:{number}")
        if name is not None:
            seen[name] = number
    lines = []
    for source, name, number in entries:
        lines.append(SourceLine(source, name or free_name(source, set(seen)), number))
        seen.setdefault(lines[-1].name, number)
    return lines


def free_name(source: str, taken: set[str]) -> str:
    """`stream_names`'s name for `source`, with `-2`, `-3`, ... until it is not in `taken`."""
    base = stream_names([source])[0]
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


class StreamControl:
    """Lists, adds and removes the streams of a running pipeline; thread-safe. `add`/`remove` return once the
    request is accepted: the stream starts (or ends, its outputs finalised) on its own threads."""

    def __init__(self, pipeline: Pipeline, sources_file: Path | None = None) -> None:
        self.pipeline, self.sources_file = pipeline, sources_file
        self.lock = threading.Lock()  # one change at a time

    def list(self) -> list[dict[str, Any]]:
        """The streams that have not ended: name, source, state and who added them ("args", "file", "api")."""
        return [
            {"name": s.name, "source": s.stats.source, "state": s.stats.state, "origin": s.origin}
            for s in self.pipeline.running()
        ]

    def add(self, source: str, name: str | None = None) -> str:
        """Start a stream; returns its name. A bad source or name, or a name in use, is a `UserError`."""
        if not isinstance(source, str) or not source.strip():
            raise UserError("bad source: expected a video path, a camera index or a URL", repr(source))
        if name is not None and not isinstance(name, str):
            raise UserError("bad stream name: expected a string", repr(name))
        with self.lock:
            if name is None:
                name = free_name(source, {s.name for s in self.pipeline.running()})
            self._add(source, check_name(name, "name"), "api")
        return name

    def remove(self, name: str) -> None:
        """End the stream `name` (`UserError("unknown stream", name)` when none runs)."""
        with self.lock:
            self.pipeline.remove(name)
        log.info(f"{name}: removed", stream=name, event="removed")

    def reload(self) -> None:
        """Apply the sources file again (SIGHUP): streams of lines that went away (or whose source changed) end,
        new lines start; streams added otherwise stay. A file that cannot be applied changes nothing."""
        if self.sources_file is None:
            return
        with self.lock:
            running = self.pipeline.running()
            try:
                lines = read_sources(self.sources_file)
                self._check(lines, running)
            except UserError as exc:
                log.warning(f"sources not reloaded, {len(running)} streams go on: {exc}", event="reload refused")
                return
            current = {s.name: s for s in running if s.origin == "file"}
            wanted = {line.name: line for line in lines}
            for name, stream in current.items():
                if name not in wanted or wanted[name].source != stream.stats.source:
                    self.pipeline.remove(name)
                    log.info(f"{name}: removed (sources file)", stream=name, event="removed")
            for line in lines:
                old = current.get(line.name)
                if old is None or old.stats.source != line.source:
                    try:
                        self._add(line.source, line.name, "file")
                    except Exception as exc:  # a source that cannot open: the others go on
                        log.warning(f"{line.name}: not added: {exc}", stream=line.name, event="add refused")

    def _check(self, lines: Sequence[SourceLine], running: Sequence[Stream]) -> None:
        """Refuse a file whose names clash with streams it did not add, or that names a missing video."""
        others = {s.name for s in running if s.origin != "file"}
        assert self.sources_file is not None
        for line in lines:
            where = f"{self.sources_file}:{line.line}"
            if line.name in others:
                raise UserError(f"duplicate stream name '{line.name}' (a stream not from the file has it)", where)
            if not is_live(line.source) and not Path(line.source).is_file():
                raise UserError(f"video not found: {line.source}", where)

    def _add(self, source: str, name: str, origin: str) -> None:
        for ending in [s for s in self.pipeline.streams if s.name == name and s.closed]:
            ending.writer_done.wait(ENDING_WAIT_S if self.pipeline.started else 0)  # its outputs first
        self.pipeline.add(source, name, origin=origin)
        log.info(f"{name}: added ({source})", stream=name, event="added", origin=origin)
