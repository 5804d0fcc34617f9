"""One exit-code rule for every command (README, "Exit codes, outputs and values"): 2 when a command could not do
or finish its work, 1 when it finished with a negative verdict, 130 when interrupted. The README holds the one
table; each row has its tests, named here; the stream's --help says the same."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import cfnet, read_video, synthetic_frames, write_video_file

ROOT = Path(__file__).resolve().parents[1]
ROWS: dict[int, list[str]] = {
    0: [
        "tests/test_exit_codes.py::test_a_stream_that_ends_exits_0",
        "tests/runtime/stream/test_streams.py::test_sigterm_finalises_every_output_like_ctrl_c",
    ],
    1: [
        "tests/runtime/stream/test_streams.py::test_a_stream_failing_midway_exits_1_after_finalising_every_output",
        "tests/export/test_onnx_export.py::test_parity_failure_through_the_cli_exits_1_and_writes_nothing",
        "tests/export/test_autopilot.py::test_cli_autopilot_reports_and_stores_nodes_and_miou",
    ],
    2: [
        "tests/test_bad_input.py::test_bad_input_is_one_line_exit_2_and_leaves_no_output",
        "tests/bad_input/test_outputs.py::test_an_output_over_an_input_or_another_output_is_refused_up_front",
        "tests/bad_input/test_unwritable.py::test_a_full_disk_is_one_line_and_leaves_nothing_half_written",
        "tests/test_exit_codes.py::test_a_model_lost_mid_stream_exits_2_with_the_mp4_finalised",
        "tests/runtime/triton/test_triton.py::test_cfnet_serve_and_a_server_lost_mid_stream",
    ],
    130: [
        "tests/runtime/stream/test_streams.py::test_sigterm_before_the_first_frame_exits_130_like_ctrl_c",
        "tests/cfnet/test_ablation.py::test_a_plan_stopped_by_sigterm_still_writes_the_report_of_what_finished",
    ],
}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.runtime.helpers import export_tiny, tiny_metadata

    return export_tiny(tmp_path_factory.mktemp("model") / "tiny.onnx", tiny_metadata())


def test_the_readme_has_one_exit_code_table_and_each_row_its_tests() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.count("| exit | meaning |") == 1
    table = readme.split("| exit | meaning |", 1)[1].split("\n\n", 1)[0]
    assert [int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)] == sorted(ROWS)
    for node in (node for nodes in ROWS.values() for node in nodes):
        path, name = node.split("::")
        assert f"\ndef {name}(" in (ROOT / path).read_text(), node


def test_the_stream_help_has_the_same_codes() -> None:
    from runtime.cli import STREAM_EXIT_CODES

    assert [int(code) for code in re.findall(r"^  (\d+) ", STREAM_EXIT_CODES, re.M)] == sorted(ROWS)


def test_a_stream_that_ends_exits_0(tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video_file(tmp_path / "in.mp4", synthetic_frames(4, (48, 64)))
    code, _, err = cfnet(["stream", video, "--model", tiny_onnx, "--out", tmp_path / "out.mp4", "--max-frames", "3"],
                         capsys)
    assert code == 0, err
    assert len(read_video(tmp_path / "out.mp4")[0]) == 3


def test_a_model_lost_mid_stream_exits_2_with_the_mp4_finalised(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model server lost after three frames (as `tests/runtime/triton` does with a real server, SIGTERMed): the
    run cannot go on, so exit 2 with one line, after the MP4 of the frames before is finalised."""
    import runtime.cli
    from runtime.errors import UserError

    opened = runtime.cli._open

    def losing(*args: Any) -> Any:
        backend = opened(*args)
        infer, calls = backend.infer, []

        def lost(images: Any) -> Any:
            calls.append(1)
            if len(calls) > 3:
                time.sleep(1.0)  # the writer encodes the three frames inferred before the loss meanwhile
                raise UserError("Triton: the server is gone", "grpc://127.0.0.1:8001/cfnet")
            return infer(images)

        backend.infer = lost
        return backend

    monkeypatch.setattr(runtime.cli, "_open", losing)
    video = write_video_file(tmp_path / "in.mp4", synthetic_frames(20, (48, 64)))
    code, _, err = cfnet(["stream", video, "--model", tiny_onnx, "--out", tmp_path / "out.mp4"], capsys)
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert code == 2 and lines[-1] == "error: Triton: the server is gone (grpc://127.0.0.1:8001/cfnet)", err
    assert "Traceback" not in err
    assert 0 < len(read_video(tmp_path / "out.mp4")[0]) < 20  # the frames before the loss, playable
