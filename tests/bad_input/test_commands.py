"""Inputs that crashed a command, or were accepted and did nothing useful (issue 25 items 5 and 7, issue 21 items
16 and 17): each is one line and exit 2 before anything is written, or, for sizes, works as export and runtime do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfnet.cli import main
from tests.helpers import fails_cleanly
from tests.runtime.helpers import cfnet


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import cv2
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cfnet.data.synth import synthesize
    from tests.runtime.helpers import export_tiny, tiny_metadata

    folder = tmp_path_factory.mktemp("inputs")
    cv2.imwrite(str(folder / "a.png"), np.zeros((48, 64, 3), np.uint8))
    (folder / "broken.png").write_bytes((folder / "a.png").read_bytes()[:40])
    scores = numpy_helper.from_array(np.zeros((1, 4, 8, 8), np.float32))
    graph = helper.make_graph(  # a graph of one constant: no input at all
        [helper.make_node("Constant", [], ["logits"], value=scores)], "constant", [],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 8, 8])],
    )
    constant = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    constant.ir_version = 8
    onnx.save(constant, str(folder / "no-input.onnx"))
    return {
        "image": folder / "a.png",
        "broken": folder / "broken.png",
        "onnx": export_tiny(folder / "tiny.onnx", tiny_metadata()),
        "no-input": folder / "no-input.onnx",
        "data": synthesize(folder / "data", train=1, val=1, size=(128, 256), seed=0),
    }


SEG = ["segment", "{image}", "--model", "{onnx}", "--out", "{out}"]
# case -> (arguments, a fragment of the one error line)
CASES = {
    "ablate --variants ,": (["ablate", "--data", "{data}", "--out", "{out}", "--variants", ","], "names no variant"),
    "segment a.png broken.png": (["segment", "{image}", "{broken}", "--model", "{onnx}", "--out", "{out}"],
                                 "cannot read image"),
    "export onnx --opset 99": (["export", "onnx", "--model", "unet", "--out", "{out}.onnx", "--opset", "99"],
                               "opset 99 is newer"),
    "train --crop 4096x4096 on 128x256 images": (
        ["train", "--model", "unet", "--preset", "tiny", "--data", "{data}", "--out", "{out}", "--crop", "4096x4096"],
        "crop 4096x4096 is larger than the largest training image (128x256)"),
    "ablate --crop 4096x4096": (["ablate", "--data", "{data}", "--out", "{out}", "--crop", "4096x4096"],
                                "crop 4096x4096 is larger"),
    "segment --model grpc://...:99999/x": ([*SEG[:3], "grpc://127.0.0.1:99999/x", "--out", "{out}"], "PORT 1..65535"),
    "segment --model grpc://...:port/x": ([*SEG[:3], "grpc://127.0.0.1:port/x", "--out", "{out}"], "PORT 1..65535"),
    "stream 99999999999999999999": (["stream", "99999999999999999999", "--model", "{onnx}"], "camera index out of"),
    "stream ²": (["stream", "²", "--model", "{onnx}"], "camera index out of range"),
    "segment --model an ONNX without inputs": ([*SEG[:3], "{no-input}", "--out", "{out}", "--classes", "4",
                                               "--input-size", "8x8"], "the model has no input"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_input_is_one_line_and_nothing_is_written(
    case: str, inputs: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    args, fragment = CASES[case]
    values = {**{k: str(v) for k, v in inputs.items()}, "out": str(tmp_path / "out")}
    err = fails_cleanly([arg.format(**values) for arg in args], capfd)
    assert fragment in err
    assert list(tmp_path.iterdir()) == []


def test_verbose_after_double_dash_is_an_argument(inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """After `--` every word is an argument: `--verbose` there is a second source, not the flag."""
    err = fails_cleanly(["stream", str(inputs["image"]), "--model", str(inputs["onnx"]), "--out", "o.mp4", "--",
                         "--verbose"], capsys)
    assert "with several sources --out is a folder" in err  # one line: no traceback shown


@pytest.mark.parametrize("group", [[], ["export"], ["data"]])
def test_a_group_without_a_command_prints_its_usage(group: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """As click does it: the usage on stderr, exit 2; not the whole help as one `error:` line."""
    with pytest.raises(SystemExit) as exit_info:
        main(group)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(f"Usage: {' '.join(['cfnet', *group])} [OPTIONS] COMMAND") and "error:" not in err


@pytest.mark.parametrize(
    ("args", "padded"),
    [(["--size", "500x500"], {"unet": [512, 512], "segformer": [512, 512], "hrnet": [500, 500]}),
     (["--model", "unet", "--size", "1080x1920"], {"unet": [1088, 1920]}),
     (["--size", "1x1"], {"unet": [16, 16], "cfnet-pspnet": [32, 32], "pspnet": [1, 1]})],
)
def test_models_pads_sizes_as_export_and_runtime_do(
    args: list[str], padded: dict[str, list[int]], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cfnet(["models", *args, "--json"], capsys)
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    for name, size in padded.items():
        assert rows[name]["input_size"] == size and rows[name]["gflops"] > 0
    code, out, _ = cfnet(["models", *args], capsys)
    assert code == 0 and "padded to a multiple of the size divisor" in out


@pytest.mark.parametrize(("models", "size", "measured"), [("unet", "100x100", "112x112"),
                                                          ("unet,segformer", "1x1", "32x32")])
def test_bench_pads_sizes_the_models_cannot_take(
    models: str, size: str, measured: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "--models", models, "--preset", "tiny", "--size", size, "--backends", "torch,onnxruntime",
            "--warmup", "0", "--iters", "1", "--threads", "1", "--out", tmp_path / "b"]
    code, _, err = cfnet(args, capsys)
    assert code == 0, err
    assert f"--size {size} padded to {measured}" in err
    rows = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    assert rows and all(row.get("median_ms") for row in rows), rows


def test_one_padding_rule_for_the_train_side_and_the_runtime() -> None:
    from cfnet.sizes import padded_size
    from runtime.preprocess import padded_size as runtime_padded_size

    for size, divisor in (((1, 1), 32), ((100, 100), 16), ((1080, 1920), 32), ((64, 64), 1)):
        assert padded_size(size, divisor) == runtime_padded_size(size, divisor)
