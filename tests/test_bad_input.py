"""The fault sweep across every command: bad input gives one `error: ...` line, exit 2, and no output file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from tests.helpers import fails_cleanly


class _Payload:
    """A pickle whose loading would create a marker file: a checkpoint must never execute it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _fill(args: list[str], files: dict[str, Path]) -> list[str]:
    return [arg.format(**{k: str(v) for k, v in files.items()}) for arg in args]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    corrupt_png = tmp_path / "corrupt.png"
    corrupt_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    corrupt_onnx = tmp_path / "corrupt.onnx"
    corrupt_onnx.write_bytes(b"not a protobuf at all")
    corrupt_ckpt = tmp_path / "corrupt.pt"
    corrupt_ckpt.write_bytes(b"PK\x03\x04 truncated zip")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    return {
        "png": corrupt_png,
        "onnx": corrupt_onnx,
        "ckpt": corrupt_ckpt,
        "evil": evil,
        "marker": marker,
        "out": tmp_path / "out",
        "missing": tmp_path / "missing",
    }


CASES = {
    "models: unknown model": ["models", "--model", "nope"],
    "models: malformed size": ["models", "--size", "512by512"],
    "data synth: malformed size": ["data", "synth", "{out}", "--size", "0x512"],
    "train: unknown model": ["train", "--model", "nope", "--data", "{missing}", "--out", "{out}"],
    "train: missing data": ["train", "--model", "unet", "--preset", "tiny", "--data", "{missing}", "--out", "{out}"],
    "evaluate: corrupt checkpoint": ["evaluate", "--checkpoint", "{ckpt}", "--data", "{missing}"],
    "export: unknown model": ["export", "onnx", "--model", "nope", "--out", "{out}.onnx"],
    "export: corrupt checkpoint": ["export", "onnx", "--checkpoint", "{ckpt}", "--out", "{out}.onnx"],
    "export: missing checkpoint": ["export", "onnx", "--checkpoint", "{missing}.pt", "--out", "{out}.onnx"],
    "export: malformed size": ["export", "onnx", "--model", "unet", "--size", "64x", "--out", "{out}.onnx"],
    "build-engine: not an ONNX file": ["build-engine", "{png}", "--out", "{out}.engine"],
    "build-engine: malformed shape": ["build-engine", "{onnx}", "--out", "{out}.engine", "--min-shape", "1x3x64"],
    "segment: corrupt ONNX": ["segment", "{png}", "--model", "{onnx}", "--out", "{out}"],
    "segment: missing model": ["segment", "{png}", "--model", "{missing}.onnx", "--out", "{out}"],
    "stream: missing video": ["stream", "{missing}.mp4", "--model", "{onnx}", "--out", "{out}.mp4"],
    "bench: unknown model": ["bench", "--models", "nope", "--out", "{out}"],
    "build-engine: missing ONNX": ["build-engine", "{missing}.onnx", "--out", "{out}.engine"],
    "demo: --out is a file": ["demo", "--out", "{png}"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_no_output(
    case: str, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fails_cleanly(_fill(CASES[case], files), capsys)
    out = files["out"]
    leftovers = [p for p in out.parent.iterdir() if p.name.startswith(out.name)]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("command", [["evaluate", "--data", "{missing}"], ["export", "onnx", "--out", "{out}.onnx"]])
def test_a_malicious_checkpoint_is_refused_and_never_executed(
    command: list[str], files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    err = fails_cleanly(_fill(command, files) + ["--checkpoint", str(files["evil"])], capsys)
    assert str(files["evil"]) in err
    assert not files["marker"].exists(), "the pickle's payload ran"
    assert not Path(f"{files['out']}.onnx").exists()


def _foreign_onnx(path: Path, in_channels: int, reduce_to_3d: bool) -> Path:
    """A 1x1-conv ONNX without cfnet metadata: `in_channels` -> 4 scores; `reduce_to_3d`: their mean, N x H x W."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, in_channels, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["images", "w"], ["scores" if reduce_to_3d else "logits"])]
    out_shape: list[int | str] = ["n", 4, "h", "w"]
    if reduce_to_3d:
        nodes.append(helper.make_node("ReduceMean", ["scores"], ["logits"], axes=[1], keepdims=0))
        out_shape = ["n", "h", "w"]
    graph = helper.make_graph(
        nodes,
        "foreign",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", in_channels, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def models(files: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A good image, a truncated PNG, an empty folder, the runtime tests' 4-class ONNX (one with a dynamic class
    dimension) and foreign ONNX files with 1 input channel or a 3-D output."""
    import cv2
    import numpy as np
    import onnx

    from tests.runtime.helpers import export_tiny, tiny_metadata

    image = tmp_path / "street.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    (tmp_path / "empty").mkdir()
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "truncated.png").write_bytes(truncated.read_bytes())
    tiny = export_tiny(tmp_path / "tiny.onnx", tiny_metadata())
    proto = onnx.load(str(tiny))
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"
    onnx.save(proto, str(tmp_path / "dynamic.onnx"))
    return {
        **files,
        "image": image,
        "truncated": truncated,
        "empty": tmp_path / "empty",
        "calib": tmp_path / "calib",
        "tiny": tiny,
        "dynamic": tmp_path / "dynamic.onnx",
        "gray": _foreign_onnx(tmp_path / "gray.onnx", 1, False),
        "flat": _foreign_onnx(tmp_path / "flat.onnx", 3, True),
    }


SEG = ["segment", "{image}", "--model", "{tiny}", "--out", "{out}"]
STREAM = ["stream", "{missing}.mp4", "--model", "{tiny}", "--out", "{out}.mp4"]
FOREIGN = ["--classes", "4", "--input-size", "96x128"]
HUGE = "100000x100000"
TOO_LARGE = "too large: at most 8192 per side"
# case -> (arguments, a fragment the one error line must contain)
RUNTIME_CASES = {
    "segment: --out's parent is a file": (SEG[:-1] + ["{png}/seg"], "is a file, not a folder"),
    "stream: --out's parent is a file": (STREAM[:-1] + ["{png}/seg.mp4"], "is a file, not a folder"),
    "stream: --save-masks's parent is a file": (STREAM + ["--save-masks", "{png}/masks"], "is a file, not a folder"),
    "export: --out's parent is a file": (
        ["export", "onnx", "--model", "unet", "--preset", "tiny", "--size", "64x64", "--out", "{png}/m.onnx"],
        "is a file, not a folder",
    ),
    "data synth: OUT's parent is a file": (["data", "synth", "{png}/data", "--train", "1", "--val", "0"], "a file"),
    "data synth: --video's parent is a file": (
        ["data", "synth", "{out}", "--train", "0", "--val", "0", "--video", "{png}/v.mp4"],
        "a file",
    ),
    "bench: --out's parent is a file": (["bench", "--models", "unet", "--out", "{png}/report"], "is a file"),
    "bench: --markdown's parent is a file": (["bench", "--out", "{out}", "--markdown", "{png}/b.md"], "is a file"),
    "segment: --classes fewer than the outputs": (SEG + ["--classes", "3"], "outputs 4 classes but 3 are named"),
    "segment: names more than a dynamic output": (
        ["segment", "{image}", "--model", "{dynamic}", "--out", "{out}", "--classes", '["a","b","c","d","e"]'],
        "outputs 4 classes but 5 are named",
    ),
    "stream: --classes disagree": (STREAM + ["--classes", "5"], "outputs 4 classes but 5 are named"),
    "stream: --serve beyond loopback without a token": (STREAM + ["--serve", "0.0.0.0:0"], "--serve-insecure"),
    "segment: a 1-channel foreign ONNX": (SEG[:3] + ["{gray}", "--out", "{out}", *FOREIGN], "N x 3 x H x W"),
    "segment: a 3-D output": (SEG[:3] + ["{flat}", "--out", "{out}", *FOREIGN], "output is 3-D"),
    "export: huge --size": (["export", "onnx", "--model", "unet", "--out", "{out}.onnx", "--size", HUGE], TOO_LARGE),
    "data synth: huge --size": (["data", "synth", "{out}", "--size", HUGE], TOO_LARGE),
    "bench: huge --size": (["bench", "--models", "unet", "--out", "{out}", "--size", HUGE], TOO_LARGE),
    "segment: huge --input-size": (SEG + ["--input-size", HUGE], TOO_LARGE),
    "stream: huge --input-size": (STREAM + ["--input-size", HUGE], TOO_LARGE),
    "export: --calib-images 0": (
        ["export", "onnx", "--model", "unet", "--out", "{out}.onnx", "--calib-images", "0"],
        "--calib-images",
    ),
    "segment: --classes 0": (SEG + ["--classes", "0"], "at least 1 class"),
    "segment: --std 0,0,0": (SEG + ["--std", "0,0,0"], "Invalid value for '--std'"),
    "segment: an empty folder": (["segment", "{empty}", "--model", "{tiny}", "--out", "{out}"], "no images"),
    "export: a truncated calibration PNG": (
        ["export", "onnx", "--model", "unet", "--preset", "tiny", "--size", "64x64", "--out", "{out}.onnx"]
        + ["--calib-data", "{calib}", "--precision", "int8"],
        "cannot read image: libpng error",
    ),
    "export triton: a non-ASCII --name": (
        ["export", "triton", "{tiny}", "--out", "{out}", "--name", "名前ñ"],
        "invalid model name '名前ñ' (ASCII letters, digits",
    ),
    "segment: a truncated PNG": (
        ["segment", "{truncated}", "--model", "{tiny}", "--out", "{out}"],
        "cannot read image: libpng error",
    ),
    # results as data (issue 24); /proc/self/ is a folder nobody, root included, can create files in
    "stream: --emit into a folder that cannot be written": (STREAM + ["--emit", "/proc/self/"], "cannot write into"),
    "stream: --emit under a file": (STREAM + ["--emit", "{png}/results.jsonl"], "is a file, not a folder"),
    "segment: --emit into a folder that cannot be written": (SEG + ["--emit", "/proc/self/"], "cannot write into"),
    "stream: --smooth ema:2": (STREAM + ["--smooth", "ema:2"], "'ema:2': ema:A takes a weight A in (0, 1]"),
    "stream: --smooth flow:0.5:1": (STREAM + ["--smooth", "flow:0.5:1"], "'flow:0.5:1': flow:A:D takes a weight A"),
    "stream: --smooth vote:0": (STREAM + ["--smooth", "vote:0"], "vote:K takes a whole number of frames"),
    "stream: --smooth blur:3": (STREAM + ["--smooth", "blur:3"], "expected ema:A"),
    "stream: --epsilon -1": (STREAM + ["--epsilon", "-1"], "Invalid value for '--epsilon'"),
    "segment: --epsilon -1": (SEG + ["--epsilon", "-1"], "Invalid value for '--epsilon'"),
    "stream: --min-area 0": (STREAM + ["--min-area", "0"], "(--min-area)"),
    "stream: --emit-every 0": (STREAM + ["--emit-every", "0"], "(--emit-every)"),
    "stream: --drift-alert 1.5": (STREAM + ["--drift-alert", "1.5"], "the score is in [0, 1] (--drift-alert)"),
    "stream: --drift-window -1": (STREAM + ["--drift-window", "-1"], "Invalid value for '--drift-window'"),
    "stream: --drift-alert without a reference in the model": (
        STREAM + ["--drift-alert", "0.3"],
        "the model has no cfnet.reference (export it with --calib-data to store one) (--drift-alert)",
    ),
}


@pytest.mark.parametrize("case", sorted(RUNTIME_CASES))
def test_bad_input_is_named_in_one_line_and_nothing_is_written(
    case: str, models: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """`capfd`: what native libraries print on file descriptor 2 (libpng) counts as a line too."""
    args, fragment = RUNTIME_CASES[case]
    err = fails_cleanly(_fill(args, models), capfd)
    assert fragment in err
    assert "metadata" not in err or "--classes" in err  # a bad option is blamed on the option
    out = models["out"]
    assert [p for p in out.parent.iterdir() if p.name.startswith(out.name)] == []
    assert [p for p in models["png"].parent.iterdir() if p.name.startswith(".")] == []


def test_train_side_and_runtime_share_one_size_limit() -> None:
    """`cfnet/sizes.py` and the runtime's parser mirror each other (the runtime may not import cfnet)."""
    from cfnet.sizes import MAX_SIDE, parse_size
    from runtime.artifact import MAX_SIDE as RUNTIME_MAX_SIDE
    from runtime.artifact import parse_size as runtime_parse_size

    assert MAX_SIDE == RUNTIME_MAX_SIDE
    edge = f"{MAX_SIDE}x{MAX_SIDE}"
    assert parse_size(edge) == runtime_parse_size(edge) == (MAX_SIDE, MAX_SIDE)
    for parse in (parse_size, runtime_parse_size):
        with pytest.raises(ValueError, match=f"at most {MAX_SIDE} per side"):
            parse(f"{MAX_SIDE + 1}x64")
