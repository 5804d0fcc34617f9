"""The heap's free pages go back to the system (glibc's malloc_trim) and frame-sized blocks are mappings of their
own (a fixed mmap threshold), measured on a real process's RSS."""

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PRELUDE = textwrap.dedent(
    """
    import ctypes, sys
    from runtime.memory import long_run, release_free_memory

    def rss_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def heaps():  # glibc's arenas, as malloc_info lists them
        import os, tempfile
        libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        fd, path = tempfile.mkstemp()
        os.close(fd)
        stream = libc.fopen(path.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        count = open(path).read().count("<heap nr=")
        os.unlink(path)
        return count
    """
)

FRAGMENTED = PRELUDE + textwrap.dedent(
    """
    chunks = [libc.malloc(64 * 1024) for _ in range(3000)]  # under the mmap threshold: in the heap
    for chunk in chunks:
        ctypes.memset(chunk, 1, 64 * 1024)
    for k, chunk in enumerate(chunks):
        if k % 16:
            libc.free(chunk)  # every 16th kept: the heap cannot shrink from its top
    before = rss_mb()
    trimmed = release_free_memory() if sys.argv[1] == "trim" else None
    print(trimmed, before, rss_mb())
    """
)


FRAMES = PRELUDE + textwrap.dedent(
    """
    fixed = long_run() if sys.argv[1] == "long" else None
    libc.free(libc.malloc(8 << 20))  # a big block freed: glibc's own rule raises the threshold to 8 MB
    before = rss_mb()
    frames = [libc.malloc(600 * 1024) for _ in range(100)]  # frame-sized buffers
    for frame in frames:
        ctypes.memset(frame, 1, 600 * 1024)
    for k, frame in enumerate(frames):
        if k % 8:
            libc.free(frame)
    print(fixed, rss_mb() - before)
    """
)


def _run(mode: str, code: str = FRAGMENTED, *args: str) -> list[str]:
    return subprocess.run(
        [sys.executable, "-c", code, mode, *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()


def test_free_heap_pages_are_given_back() -> None:
    trimmed, before, after = _run("trim")
    assert trimmed == "True"
    assert float(before) - float(after) > 100  # MB: most of the ~176 MB freed in the middle of the heap
    _, kept_before, kept_after = _run("keep")
    assert float(kept_before) - float(kept_after) < 10  # without the trim they stay resident


def test_frame_sized_blocks_are_returned_when_freed_in_a_long_run() -> None:
    fixed, grown = _run("long", FRAMES)
    assert fixed == "True"
    assert float(grown) < 15  # MB: the 13 kept buffers (7.6 MB), the 87 freed ones unmapped
    _, grown_by_default = _run("default", FRAMES)
    assert float(grown_by_default) > 40  # glibc's raised threshold keeps the freed ones in the heap


def test_the_trimmer_trims_at_most_once_a_period(monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.memory as memory

    calls: list[int] = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: calls.append(1) or True)
    trimmer = memory.Trimmer(every=3600)
    trimmer.tick()
    assert calls == []
    trimmer.due = 0.0  # the period is over
    trimmer.tick()
    trimmer.tick()
    assert calls == [1]


ARENAS = PRELUDE + textwrap.dedent(
    """
    import threading
    fixed = long_run() if sys.argv[1] == "long" else None

    together = threading.Barrier(8)

    def allocate():  # eight threads holding a block at once: an arena each, unless capped
        block = libc.malloc(1000)
        together.wait()
        libc.free(block)

    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(fixed, heaps())
    """
)


def test_threads_share_a_capped_number_of_arenas_in_a_long_run() -> None:
    fixed, heaps = _run("long", ARENAS)
    assert fixed == "True" and int(heaps) <= 2  # memory.ARENAS
    _, heaps_by_default = _run("default", ARENAS)
    assert int(heaps_by_default) > 2  # glibc makes an arena per new thread, up to 8 per core


STREAM = PRELUDE + textwrap.dedent(
    """
    from runtime.cli import stream_command

    *videos, model = sys.argv[2:]
    stream_command.main([*videos, "--model", model, "--json"], standalone_mode=False)
    print(heaps())
    """
)


def test_cfnet_stream_caps_the_arenas_before_its_sources_open(
    tiny_onnx: Path, write_video: Callable[..., Path], tmp_path: Path
) -> None:
    """FFmpeg's decoder threads allocate as soon as a file opens, before the pipeline starts: capped only when
    `cfnet stream` sets the cap first thing (the pipeline's own call came too late: 7 arenas on 2 cores)."""
    rng = np.random.default_rng(0)
    videos = [
        str(write_video(tmp_path / f"v{k}.mp4", [rng.integers(0, 255, (48, 64, 3), np.uint8) for _ in range(20)]))
        for k in range(3)
    ]
    *_, heaps = _run("stream", STREAM, *videos, str(tiny_onnx))
    assert int(heaps) <= 2  # memory.ARENAS
