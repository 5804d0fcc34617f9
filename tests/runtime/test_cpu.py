"""The CPU's int8 path (from /proc/cpuinfo's flags) and the notice for an int8 file measured on another path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

import runtime.cpu
from runtime.backends import open_backend
from runtime.cpu import EXACT_SUMS, cpu_flags, int8_notice, needs_exact_sums, path_of
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


def test_int8_weights_need_exact_sums_where_u8_x_s8_saturates() -> None:
    int8 = {"cfnet.precision": "int8", "cfnet.int8_cpu_path": "vnni", "cfnet.int8_weights": "int8"}
    assert needs_exact_sums(int8, here="avx2") and needs_exact_sums(int8, here="unknown")
    assert not needs_exact_sums(int8, here="vnni") and not needs_exact_sums(int8, here="amx")
    assert not needs_exact_sums({**int8, "cfnet.int8_weights": "uint8"}, here="avx2")  # the cpu target
    assert needs_exact_sums({"cfnet.precision": "int8"}, here="avx2")  # older int8 files all had int8 weights
    assert not needs_exact_sums({"cfnet.precision": "fp32"}, here="avx2")


def test_the_notice_says_what_a_different_path_means() -> None:
    int8 = {"cfnet.precision": "int8", "cfnet.int8_cpu_path": "vnni", "cfnet.int8_weights": "int8"}
    assert int8_notice(int8, "m.onnx", here="vnni") is None
    assert int8_notice({**int8, "cfnet.precision": "fp32"}, "m.onnx", here="avx2") is None
    exact = int8_notice(int8, "m.onnx", here="avx2")
    assert exact is not None and exact.startswith("warning: m.onnx: this CPU's int8 path is AVX2 without VNNI")
    assert "run as uint8 (exact sums" in exact
    portable = int8_notice({**int8, "cfnet.int8_weights": "uint8"}, "m.onnx", here="avx2")
    assert portable is not None and portable.startswith("note:") and "carries over" in portable
    assert "measured on a VNNI CPU, this one's int8 path is AVX2 without VNNI: its uint8 weights" in portable
    elsewhere = int8_notice({**int8, "cfnet.int8_cpu_path": "avx2"}, "m.onnx", here="amx")
    assert elsewhere is not None and "its int8 weights sum exactly on both" in elsewhere
    assert int8_notice({"cfnet.precision": "int8", "cfnet.int8_weights": "uint8"}, "m.onnx", here="avx2") is None


def _recording_sessions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the `session.x64quantprecision` entry of every ONNX Runtime session created."""
    entries: list[str] = []
    real = ort.InferenceSession

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: Any = None, **kwargs: Any) -> None:
            try:
                entries.append(sess_options.get_session_config_entry(EXACT_SUMS[0]))
            except Exception:  # ORT raises when the entry was never set
                entries.append("")
            super().__init__(path, sess_options=sess_options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Recording)
    return entries


def test_the_runtime_sums_int8_weights_exactly_and_says_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    metadata = {**tiny_metadata(), "cfnet.precision": "int8", "cfnet.int8_cpu_path": "vnni"}
    model = export_tiny(tmp_path / "int8.onnx", {**metadata, "cfnet.int8_weights": "int8"})
    entries = _recording_sessions(monkeypatch)
    monkeypatch.setattr(runtime.cpu, "int8_path", lambda: "avx2")
    for _ in range(3):  # a stream's workers each open the model
        open_backend(model, device="cpu").close()
    assert entries == ["", "1"] * 3  # opened, then reopened with exact sums
    err = capsys.readouterr().err
    assert err.count("this CPU's int8 path is AVX2 without VNNI") == 1, err
    entries.clear()
    portable = export_tiny(tmp_path / "cpu.onnx", {**metadata, "cfnet.int8_weights": "uint8"})
    open_backend(portable, device="cpu").close()
    assert entries == [""] and "carries over" in capsys.readouterr().err
    entries.clear()
    monkeypatch.setattr(runtime.cpu, "int8_path", lambda: "vnni")
    open_backend(model, device="cpu").close()
    assert entries == [""] and "int8" not in capsys.readouterr().err
