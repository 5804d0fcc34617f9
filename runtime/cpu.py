"""The CPU's int8 path in ONNX Runtime, from /proc/cpuinfo's flags, and what an int8 file says about it.

ONNX Runtime's CPU kernels (MLAS) pick their uint8 x int8 matrix kernels by CPUID
(`MLAS_PLATFORM::MLAS_PLATFORM`, onnxruntime/core/mlas/lib/platform.cpp), so one int8 file computes
differently on different x86 CPUs:
- `amx`: AMX-INT8 tiles (`amx_tile` + `amx_int8`): exact int32 sums.
- `vnni`: AVX-512 VNNI or AVX-VNNI (`vpdpbusd`): exact int32 sums.
- `avx2`: AVX2, or AVX-512 without VNNI: `vpmaddubsw` adds each pair of u8 x s8 products in saturating int16,
  so weights beyond +-64 can saturate (255 x 127 x 2 = 64770 > 32767); ONNX Runtime's quantisation docs
  recommend 7-bit weights (`reduce_range`) or u8 x u8 there.
- `sse`: x86 without AVX2 (widening kernels), `other`: not x86 (ARM's dot products are exact), `unknown`: an
  x86 CPU whose flags cannot be read.
An int8 export records the path of the CPU that measured its agreement (`cfnet.int8_cpu_path`; measured with
exact sums, `EXACT_SUMS`) and its weights' type (`cfnet.int8_weights`): uint8 weights (`--int8-target cpu`) run
in u8 x u8 kernels, exact everywhere; int8 weights run in u8 x s8 kernels, exact with VNNI or AMX only. On a
saturating path the runtime runs int8 weights with `EXACT_SUMS` (`needs_exact_sums`), and says so once.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Mapping
from pathlib import Path

PATH_KEY = "cfnet.int8_cpu_path"
WEIGHTS_KEY = "cfnet.int8_weights"
EXACT_SUMS = ("session.x64quantprecision", "1")
"""ONNX Runtime's session entry that runs int8 weights as uint8 (u8 x u8 kernels, exact sums) on x86 CPUs with
AVX2 (`kOrtSessionOptionsAvx2PrecisionMode`, include/onnxruntime/core/session/onnxruntime_session_options_config_keys.h;
applied by `Avx2WeightS8ToU8Transformer` where `MlasPlatformU8S8Overflow()`, core/optimizer/graph_transformer_utils.cc).
Nothing changes for uint8 weights or float graphs."""
SATURATING = frozenset({"avx2", "unknown"})
"""Paths whose u8 x s8 sums can saturate with 8-bit weights (unknown: assume the worst)."""
NAMES = {
    "amx": "AMX-INT8",
    "vnni": "VNNI",
    "avx2": "AVX2 without VNNI",
    "sse": "SSE (no AVX2)",
    "other": "non-x86",
    "unknown": "x86, flags unknown",
}
X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The first CPU's feature flags (Linux), None where /proc/cpuinfo has none."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def path_of(flags: frozenset[str] | None, machine: str) -> str:
    """The int8 path (see the module docstring) of a CPU with `flags` on `machine` (`platform.machine()`)."""
    if machine.lower() not in X86:
        return "other"
    if flags is None:
        return "unknown"
    if {"amx_tile", "amx_int8"} <= flags:
        return "amx"
    if "avx_vnni" in flags or ({"avx512_vnni", "avx512bw", "avx512dq", "avx512vl"} <= flags):
        return "vnni"
    return "avx2" if "avx2" in flags else "sse"


@functools.cache
def int8_path() -> str:
    """This CPU's int8 path in ONNX Runtime."""
    return path_of(cpu_flags(), platform.machine())


def describe(path: str) -> str:
    """`vnni` -> `VNNI (exact int32 sums)`: the path and whether its int8 sums are exact."""
    exact = "saturating int16 pair sums" if path in SATURATING else "exact sums"
    return f"{NAMES.get(path, path)} ({exact})"


def needs_exact_sums(props: Mapping[str, str], here: str | None = None) -> bool:
    """Whether an ONNX file (metadata `props`) must run with `EXACT_SUMS` on this CPU (`here`: its int8 path): int8
    with int8 weights (every int8 export but the `cpu` target's; files older than the key too) on a saturating path."""
    here = int8_path() if here is None else here
    return props.get("cfnet.precision") == "int8" and props.get(WEIGHTS_KEY, "int8") == "int8" and here in SATURATING


def int8_notice(props: Mapping[str, str], where: str, here: str | None = None) -> str | None:
    """A line for running an int8 file (metadata `props`) on this CPU (`here`: its int8 path) when its int8 path differs
    from the one its agreement was measured with, or when its sums are made exact here; None otherwise."""
    if props.get("cfnet.precision") != "int8":
        return None
    here = int8_path() if here is None else here
    measured = props.get(PATH_KEY)
    if needs_exact_sums(props, here):
        return (
            f"warning: {where}: this CPU's int8 path is {describe(here)}: the int8 weights run as uint8 "
            "(exact sums, as at export; slower than u8 x s8). `--int8-target cpu` files run there as they are"
        )
    if measured is None or measured == here:
        return None
    weights = props.get(WEIGHTS_KEY, "int8")
    return (
        f"note: {where}: int8 agreement measured on a {NAMES.get(measured, measured)} CPU, this one's int8 path "
        f"is {NAMES.get(here, here)}: its {weights} weights sum exactly on both, the agreement carries over"
    )
