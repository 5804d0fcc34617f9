"""The CPU's int8 path (from /proc/cpuinfo's flags) and the notice for an int8 file measured on another path."""

from __future__ import annotations

from pathlib import Path

import pytest

import runtime.cpu
from runtime.backends import open_backend
from runtime.cpu import cpu_flags, int8_notice, path_of
from tests.runtime.helpers import export_tiny, tiny_metadata

ZEN2 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni"  # the AVX2-only EPYC of issue 22
SKYLAKE_X = ZEN2 + " avx512f avx512dq avx512cd avx512bw avx512vl"  # AVX-512 without VNNI: vpmaddubsw too
ICE_LAKE = SKYLAKE_X + " avx512_vnni"
ALDER_LAKE = ZEN2 + " avx_vnni"
SAPPHIRE_RAPIDS = ICE_LAKE + " amx_bf16 amx_tile amx_int8"


@pytest.mark.parametrize(
    ("flags", "machine", "path"),
    [
        (ZEN2, "x86_64", "avx2"),
        (SKYLAKE_X, "x86_64", "avx2"),
        (ICE_LAKE, "x86_64", "vnni"),
        (ALDER_LAKE, "x86_64", "vnni"),
        (SAPPHIRE_RAPIDS, "x86_64", "amx"),
        ("fpu sse sse2 sse4_1", "x86_64", "sse"),
        (None, "x86_64", "unknown"),
        (None, "aarch64", "other"),
    ],
)
def test_the_int8_path_follows_the_kernels_onnx_runtime_picks(flags: str | None, machine: str, path: str) -> None:
    assert path_of(None if flags is None else frozenset(flags.split()), machine) == path


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {ICE_LAKE}\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == frozenset(ICE_LAKE.split())
    assert cpu_flags(tmp_path / "missing") is None
    assert runtime.cpu.int8_path() in runtime.cpu.NAMES  # this machine's, whatever it is


def test_the_notice_says_what_a_different_path_means() -> None:
    int8 = {"cfnet.precision": "int8", "cfnet.int8_cpu_path": "vnni"}
    assert int8_notice(int8, "m.onnx", here="vnni") is None
    assert int8_notice({**int8, "cfnet.precision": "fp32"}, "m.onnx", here="avx2") is None
    assert int8_notice({"cfnet.precision": "int8"}, "m.onnx", here="avx2") is None  # older files: nothing known
    saturating = int8_notice(int8, "m.onnx", here="avx2")
    assert saturating is not None and saturating.startswith("warning: m.onnx")
    assert "VNNI (exact sums)" in saturating and "AVX2 without VNNI (saturating int16 pair sums)" in saturating
    assert "re-export with `--int8-target cpu`" in saturating
    safe = int8_notice({**int8, "cfnet.int8_weight_bits": "7"}, "m.onnx", here="avx2")
    assert safe is not None and safe.startswith("note:") and "carries over" in safe


def test_the_runtime_says_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    metadata = {**tiny_metadata(), "cfnet.precision": "int8", "cfnet.int8_cpu_path": "vnni"}
    model = export_tiny(tmp_path / "int8.onnx", metadata)
    monkeypatch.setattr(runtime.cpu, "int8_path", lambda: "avx2")
    for _ in range(3):  # a stream's workers each open the model
        open_backend(model, device="cpu").close()
    err = capsys.readouterr().err
    assert err.count("its int8 agreement was measured on a VNNI") == 1, err
    monkeypatch.setattr(runtime.cpu, "int8_path", lambda: "vnni")
    open_backend(export_tiny(tmp_path / "same.onnx", metadata), device="cpu").close()
    assert "int8 agreement" not in capsys.readouterr().err
