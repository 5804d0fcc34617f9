"""`cfnet demo` in a very reduced configuration: REPORT.md, every file it references, figures equal to the JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cfnet.cli import cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("demo") / "demo"
    args = [
        "demo",
        "--out",
        str(out),
        "--train-iters",
        "2",
        "--images",
        "4",
        "--size",
        "64x128",
        "--frames",
        "4",
        "--bench-iters",
        "1",
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "demo.json").read_text()), result.output


def test_every_stage_reports_progress_and_the_end_says_where_things_are(demo: tuple[Path, dict, str]) -> None:
    out, figures, output = demo
    for index in range(1, 9):
        assert f"[demo {index}/8]" in output
    assert f"report: {out / 'REPORT.md'}" in output
    assert set(figures["seconds"]) >= {"train cfnet-pspnet", "train segformer", "bench", "stream video"}


def test_report_references_only_files_that_exist(demo: tuple[Path, dict, str]) -> None:
    out, _, _ = demo
    text = (out / "REPORT.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert any(link.endswith(".png") for link in links) and any(link.endswith(".mp4") for link in links)
    for link in links:
        assert (out / link).is_file(), link
    for name in ("overlay.mp4", "overlay_strip.png", "bench/latency.png", "bench/accuracy.png"):
        assert (out / name).stat().st_size > 0, name


def test_report_figures_are_the_run_s(demo: tuple[Path, dict, str]) -> None:
    out, figures, _ = demo
    text = (out / "REPORT.md").read_text()
    ours = re.search(r"cfnet-pspnet val mIoU \*\*([0-9.]+)\*\*", text)
    baseline = re.search(r"SegFormer baseline trained the same way: \*\*([0-9.]+)\*\*", text)
    assert ours and float(ours.group(1)) == pytest.approx(figures["metrics"]["cfnet-pspnet"]["miou"], abs=5e-4)
    assert baseline and float(baseline.group(1)) == pytest.approx(figures["metrics"]["segformer"]["miou"], abs=5e-4)
    rows = {(r["model"], r["backend"]): r for r in figures["bench"]["rows"]}
    for precision, backend in (("fp16", "onnxruntime-fp16"), ("int8", "onnxruntime-int8")):
        shown = re.search(rf"{precision} ONNX argmax agreement with PyTorch on the val split: \*\*([0-9.]+)\*\*", text)
        assert shown and float(shown.group(1)) == pytest.approx(rows[("cfnet-pspnet", backend)]["agreement"], abs=5e-5)
    fps = re.search(r"Stream: \*\*([0-9.]+) FPS\*\*", text)
    assert fps and float(fps.group(1)) == pytest.approx(figures["stream"]["stream_fps"], abs=0.05)
    assert figures["stream"]["frames"] == figures["config"]["frames"]
    for precision in ("fp32", "fp16", "int8"):
        assert Path(figures["exports"][precision]["path"]).is_file()


def test_the_fp32_model_carries_a_drift_reference_and_the_video_its_labels(demo: tuple[Path, dict, str]) -> None:
    """What the README's results examples (`stream --emit` with drift, `evaluate --video`) read from the demo."""
    from runtime.backends import read_metadata

    out, _, _ = demo
    assert read_metadata(out / "models" / "cfnet-pspnet-fp32.onnx").reference is not None
    assert len(list((out / "video-labels").glob("video_*_gtFine_labelIds.png"))) == 4  # one per frame


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readmes_results_examples_run_as_written_on_the_demo(demo: tuple[Path, dict, str]) -> None:
    """Every command and snippet of the README's results section, in the folder that holds `demo/`."""
    import subprocess
    import sys

    out, _, _ = demo
    section = README.read_text().split("### Results as data (`--emit`, `--smooth`, drift)", 1)[1].split("<!--")[0]
    blocks = re.findall(r"```(bash|python)\n(.*?)```", section, re.DOTALL)
    commands = [c for kind, text in blocks if kind == "bash" for c in text.replace("\\\n", " ").splitlines()]
    snippets = [text for kind, text in blocks if kind == "python"]
    assert len(commands) == 6 and len(snippets) == 2
    printed = []
    for command in commands:
        assert command.startswith("cfnet ")
        line = f"{sys.executable} -m cfnet {command.removeprefix('cfnet ')}"
        subprocess.run(["bash", "-c", line], cwd=out.parent, check=True, capture_output=True, timeout=300)
    for snippet in snippets:
        done = subprocess.run([sys.executable, "-c", snippet], cwd=out.parent, check=True, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        printed.append(done.stdout)

    def lines(path: str) -> list[dict]:
        return [json.loads(line) for line in (out.parent / path).read_text().splitlines()]

    assert [r["frame"] for r in lines("demo/results.jsonl")] == [0, 1, 2, 3]  # the demo's 4 frames
    assert [r["frame"] for r in lines("demo/results/video.jsonl")] == [0]  # every 5th
    assert all("regions" not in r for r in lines("demo/shares.jsonl")) and len(lines("demo/shares.jsonl")) == 4
    assert (out / "steady.mp4").is_file() and all("score" in r["drift"] for r in lines("demo/steady.jsonl"))
    images = sorted((out / "data" / "leftImg8bit" / "val" / "renderdorf").glob("*.png"))
    assert len(lines("demo/seg/results.jsonl")) == len(images) > 0
    assert len(lines("demo/api.jsonl")) == 4 and len(printed[0].split()) == 3
    assert printed[1].startswith("{'road': 0.75, 'car': 0.25} [{'area': 6, 'bbox': [1, 1, 3, 2]")
