"""`cfnet stream`'s camera options (`runtime/cli_cameras.py`): bad input in one line, JSON logs, SIGTERM from the
first moment of the command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.runtime.helpers import ROOT, cfnet, synthetic_frames, write_video_file


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--segment-seconds", "0", "--out", "{d}/o"], "'--segment-seconds': 0.0 is not in the range x>0"),
        (["--segment-seconds", "nan", "--out", "{d}/o"], "'--segment-seconds': 'nan' is not a finite"),
        (["--segment-seconds", "5", "--out", "{d}/o", "--retain-gb", "-1"], "Invalid value for '--retain-gb': -1.0"),
        (["--retain-gb", "1", "--out", "{d}/o"], "--retain-gb and --retain-hours delete segments: give --segment-"),
        (["--segment-seconds", "5"], "--segment-seconds records segments: give --out DIR or --save-masks DIR"),
        (["--reconnect-min", "5", "--reconnect-max", "1"], "5 s is above --reconnect-max 1 (--reconnect-min)"),
        (["--sources", "{d}/bad.txt"], "bad line in the sources file: expected SOURCE [name=NAME] ({d}/bad.txt:2)"),
        (["--sources", "{d}/dup.txt"], "duplicate stream name 'x' (also on line 1) ({d}/dup.txt:2)"),
        (["--segment-seconds", "5", "--out", "{d}/o.mp4"], "(so with --sources or --segment-seconds) ({d}/o.mp4)"),
    ],
)
def test_bad_camera_options_are_one_line_and_exit_2(
    args: list[str], message: str, tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = write_video_file(tmp_path / "v.mp4", synthetic_frames(2, (48, 64)))
    (tmp_path / "bad.txt").write_text(f"{video}\n{video} {video}\n")
    (tmp_path / "dup.txt").write_text(f"{video} name=x\n{video} name=x\n")
    args = [a.format(d=tmp_path) for a in args]
    code, stdout, stderr = cfnet(["stream", video, "--model", tiny_onnx, *args], capsys)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("error: ") and message.format(d=tmp_path) in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "dup.txt", "v.mp4"]  # nothing written


def test_json_logs_are_one_object_a_line_summary_and_errors_included(
    tiny_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = write_video_file(tmp_path / "v.mp4", synthetic_frames(4, (48, 64)))
    code, stdout, stderr = cfnet(["stream", video, "--model", tiny_onnx, "--log-format", "json"], capsys)
    records = [json.loads(line) for line in stderr.splitlines()]  # no progress bar, no text
    assert code == 0 and stdout == "" and [r["event"] for r in records] == ["summary"]
    assert records[0]["level"] == "info" and records[0]["streams"][0]["frames"] == 4 and records[0]["time"][-1] == "Z"
    code, stdout, stderr = cfnet(["stream", tmp_path / "no.mp4", "--model", tiny_onnx, "--log-format", "json"], capsys)
    assert code == 2 and json.loads(stderr) == {
        "time": json.loads(stderr)["time"],
        "level": "error",
        "message": f"video not found ({tmp_path / 'no.mp4'})",
    }


def test_sigterm_while_the_options_are_parsed_exits_130(tiny_onnx: Path, tmp_path: Path) -> None:
    # parsing runs option callbacks that import OpenCV and ONNX Runtime (~0.4 s on a loaded box): a SIGTERM
    # there ended the process with 143 before the command's handler was installed
    video = write_video_file(tmp_path / "v.mp4", synthetic_frames(2, (48, 64)))
    script = textwrap.dedent(
        f"""
        import os, signal, time
        import runtime.stream.sizing as sizing

        def terminated_while_parsing(count, option):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
            raise AssertionError("SIGTERM did not interrupt the parsing")

        sizing.check_thread_count = terminated_while_parsing
        from cfnet.cli import main
        main(["stream", {str(video)!r}, "--model", {str(tiny_onnx)!r}, "--threads", "1"])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (130, "error: interrupted")
