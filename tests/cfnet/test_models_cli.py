"""`cfnet models` and the profiling behind it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cfnet.cli import main
from cfnet.models import MODEL_NAMES, build_model
from cfnet.models.profile import count_gflops, count_parameters, profile


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_gflops_of_a_convolution_count_a_multiply_add_as_two() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    multiply_adds = 8 * 16 * 24 * (3 * 3 * 3)  # outputs x products per output
    assert count_gflops(conv, (16, 24)) == pytest.approx(2 * multiply_adds / 1e9)
    assert count_parameters(conv) == 8 * 3 * 3 * 3 + 8


def test_profile_on_meta_device_matches_a_real_model() -> None:
    real = build_model("hrnet", preset="tiny")
    result = profile("hrnet", "tiny", (64, 96))
    assert round(result.params_m * 1e6) == count_parameters(real)
    assert result.gflops == pytest.approx(count_gflops(real, (64, 96)))
    assert result.size_divisor == real.size_divisor
    assert real.training  # count_gflops restores the training flag


def test_json_lists_the_tiny_preset_of_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["models", "--preset", "tiny", "--size", "64x128", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [row["name"] for row in rows] == list(MODEL_NAMES)
    for row in rows:
        assert row["preset"] == "tiny" and row["size"] == [64, 128]
        assert row["params_m"] > 0 and row["gflops"] > 0 and row["size_divisor"] >= 1


def test_gflops_grow_with_the_input_area(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["models", "--model", "pspnet", "--preset", "tiny", "--size", "64x64", "--json"], capsys)
    small = json.loads(out)[0]["gflops"]
    code, out, _ = run(["models", "--model", "pspnet", "--preset", "tiny", "--size", "128x128", "--json"], capsys)
    large = json.loads(out)[0]["gflops"]
    assert code == 0
    assert 3.5 < large / small < 4.5  # convolutions scale with the area; the pooled bins barely do


def test_table_lists_every_preset_of_one_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["models", "--model", "hrnet", "--size", "64x64"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert "GFLOPs @64x64" in lines[0]
    assert [line.split()[1] for line in lines[1:]] == ["tiny", "small", "w18", "paper"]
    params = {line.split()[1]: float(line.split()[2]) for line in lines[1:]}
    assert params["small"] == params["paper"] == round(count_parameters(build_model("hrnet", preset="small")) / 1e6, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "--model", "nope"], "error: unknown model 'nope' (choose from unet, deeplabv3,"),
        (["models", "--model", "unet", "--preset", "b0"], "error: unknown preset 'b0' for unet"),
        (["models", "--preset", "b9"], "error: no model has preset 'b9'"),
        (["models", "--size", "64"], "error: "),
    ],
)
def test_errors_are_one_line_and_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    code, out, err = run(args, capsys)
    assert code == 2
    assert err.startswith(message) and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""
