"""Keep a long run's C heap from creeping: frame-sized buffers mapped and unmapped, free pages handed back.

glibc keeps one malloc arena per thread that allocates, and an arena's free chunks stay resident: frames of many
sizes, decoded, batched and freed in different threads, raise each arena's high-water mark a little at a time, so
a pipeline that runs for months grows without holding more (measured: a 4-stream soak's in-use heap flat at 55 MB
while its free-but-resident part grew 22 -> 29 MB in 5 minutes). Two remedies, both glibc's own:
- `long_run()`: a fixed mmap threshold (`mallopt(M_MMAP_THRESHOLD)`). glibc raises the threshold each time a
  mapped block is freed, up to 32 MB, after which every frame buffer lands in an arena; pinned at its starting
  128 kB, buffers of a frame or more are their own mappings, returned to the system when freed.
  It also caps the arenas at `ARENAS` (`M_ARENA_MAX`; glibc's default is 8 per core): the reader, writer and
  inference threads then share their freed blocks instead of each arena keeping its own high-water mark (the
  usual `MALLOC_ARENA_MAX=2` of long-running Python services; the GIL serialises most allocations anyway).
- `release_free_memory()`: `malloc_trim(0)`, which hands the arenas' whole free pages back (`madvise`);
  `Trimmer` calls it every `TRIM_EVERY` seconds from a loop that runs anyway.
Elsewhere (musl, macOS, Windows) there is nothing to do and both return False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import time
from collections.abc import Callable

TRIM_EVERY = 10.0  # seconds between trims of a long run: a trim costs a few milliseconds
MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's own starting threshold, pinned (a 240x320 BGR frame is 230 kB)
ARENAS = 2
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # mallopt's parameter numbers (malloc.h)


@functools.cache
def _glibc(name: str, *argtypes: type) -> Callable[..., int] | None:
    """A glibc malloc function (returning int), or None where the C library has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    function = getattr(libc, name, None)
    if function is None:
        return None
    function.argtypes, function.restype = list(argtypes), ctypes.c_int
    return function


def long_run() -> bool:
    """Pin the mmap threshold at `MMAP_THRESHOLD` and cap the arenas at `ARENAS` for the whole process (see the
    module); False where the C library cannot. The cap binds only threads that have not allocated yet, so
    `cfnet stream` calls it first thing (FFmpeg's decoder threads start when a source opens, ONNX Runtime's when
    its session runs), and the stream pipeline again before its own threads start (a caller of `run_streams`)."""
    mallopt = _glibc("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_ARENA_MAX, ARENAS) == 1


def release_free_memory() -> bool:
    """Give the heap's free pages back to the system; False where the C library cannot."""
    trim = _glibc("malloc_trim", ctypes.c_size_t)
    if trim is None:
        return False
    trim(0)
    return True


class Trimmer:
    """`tick()` from a loop that runs anyway: `release_free_memory()` at most every `every` seconds."""

    def __init__(self, every: float = TRIM_EVERY) -> None:
        self.every = every
        self.due = time.monotonic() + every

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self.due:
            release_free_memory()
            self.due = now + self.every
