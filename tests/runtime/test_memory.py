"""The heap's free pages go back to the system (glibc's malloc_trim), measured on a real process's RSS."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FRAGMENTED = textwrap.dedent(
    """
    import ctypes, sys
    from runtime.memory import release_free_memory

    def rss_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
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


def _run(mode: str) -> tuple[str, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENTED, mode], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    return out[0], float(out[1]), float(out[2])


def test_free_heap_pages_are_given_back() -> None:
    trimmed, before, after = _run("trim")
    assert trimmed == "True"
    assert before - after > 100  # MB: most of the ~176 MB freed in the middle of the heap
    _, kept_before, kept_after = _run("keep")
    assert kept_before - kept_after < 10  # without the trim they stay resident


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
