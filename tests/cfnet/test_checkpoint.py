"""Checkpoints: round trip of every piece, atomic writes, refusal of pickles, corrupt files and other models."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cfnet.checkpoint import capture_rng, load_checkpoint, load_model, restore_rng, save_checkpoint
from cfnet.errors import UserError
from cfnet.models import build_model


def _tiny_unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", num_classes=5, preset="tiny")


def _config() -> dict:
    return {"model": "unet", "preset": "tiny", "num_classes": 5, "crop": [64, 64], "lr": 1e-4}


def test_round_trip_restores_model_optimizer_and_iteration(tmp_path: Path) -> None:
    model = _tiny_unet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 32, 32)).mean().backward()
    optimizer.step()
    path = save_checkpoint(
        tmp_path / "a.pt", model=model, optimizer=optimizer, iteration=7, config=_config(), metrics={"miou": 0.5}
    )
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temp file left behind
    payload = load_checkpoint(path)
    assert payload["iteration"] == 7 and payload["metrics"] == {"miou": 0.5} and payload["config"] == _config()
    restored = load_model(path)
    assert not restored.training
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    other = torch.optim.Adam(_tiny_unet(1).parameters(), lr=1.0)
    other.load_state_dict(payload["optimizer"])
    assert other.param_groups[0]["lr"] == 1e-3
    state = optimizer.state_dict()["state"][0]
    assert torch.equal(other.state_dict()["state"][0]["exp_avg"], state["exp_avg"])


def test_rng_states_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in the numpy state
    path = save_checkpoint(tmp_path / "r.pt", model=_tiny_unet(), iteration=0, config=_config())
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.standard_normal())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng(load_checkpoint(path)["rng"][0])
    got = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.standard_normal())
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2] and got[3] == expected[3]
    assert capture_rng()["numpy"]["keys"].dtype == torch.int64


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - the pickle protocol
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "cfnet-checkpoint/1", "model": {}, "payload": _Exploit(marker)}, evil)
    with pytest.raises(UserError) as info:
        load_checkpoint(evil)
    assert str(evil) in str(info.value)
    with pytest.raises(UserError):
        load_model(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(UserError, match="raw.pt"):
        load_checkpoint(raw)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content", [b"", b"not a checkpoint at all", b"PK\x03\x04 truncated zip"], ids=["empty", "text", "zip"]
)
def test_corrupt_files_are_user_errors_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert info.value.where == str(path)


def test_truncated_checkpoint_and_foreign_torch_file(tmp_path: Path) -> None:
    good = save_checkpoint(tmp_path / "good.pt", model=_tiny_unet(), iteration=1, config=_config())
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="cut.pt"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(UserError, match="not a cfnet checkpoint"):
        load_checkpoint(foreign)
    tagged = tmp_path / "tagged.pt"  # the right format tag, but no model config to build from
    torch.save({"format": torch.load(good, weights_only=True)["format"], "model": {}}, tagged)
    with pytest.raises(UserError, match="not a cfnet checkpoint"):
        load_checkpoint(tagged)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_load_model_refuses_another_model_and_misfitting_weights(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "u.pt", model=_tiny_unet(), iteration=1, config=_config())
    with pytest.raises(UserError, match="expected 'segformer'"):
        load_model(path, expect_model="segformer")
    assert load_model(path, expect_model="unet").config["model"] == "unet"
    wrong = save_checkpoint(tmp_path / "w.pt", model=_tiny_unet(), iteration=1, config={**_config(), "num_classes": 7})
    with pytest.raises(UserError, match="do not fit"):
        load_model(wrong)


NOT_TORCH_FILES = {
    "text": b"hello\nthese are notes, not weights\n",
    "lfs-pointer": b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 98765432\n",
    "html": b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body></body></html>\n",
}


@pytest.mark.parametrize("kind", sorted(NOT_TORCH_FILES))
@pytest.mark.parametrize("command", ["evaluate", "export", "train --resume"])
def test_a_file_that_is_no_torch_file_is_not_a_cfnet_checkpoint(
    kind: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers import fails_cleanly

    run = tmp_path / "run"
    run.mkdir()
    path = run / "last.pt"
    path.write_bytes(NOT_TORCH_FILES[kind])
    onnx = tmp_path / "m.onnx"
    args = {
        "evaluate": ["evaluate", "--checkpoint", str(path), "--data", str(tmp_path)],
        "export": ["export", "onnx", "--checkpoint", str(path), "--out", str(onnx)],
        "train --resume": ["train", "--out", str(run), "--resume"],
    }[command]
    err = fails_cleanly(args, capsys)
    assert err.startswith("error: not a cfnet checkpoint") and err.endswith(f"({path})"), err
    if kind == "text":
        assert err == f"error: not a cfnet checkpoint ({path})"
    if kind == "lfs-pointer":
        assert "git lfs pull" in err
    assert not onnx.exists() and sorted(p.name for p in run.iterdir()) == ["last.pt"]


def test_pickles_and_whole_modules_are_named_in_one_line_without_torch_advice(tmp_path: Path) -> None:
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)  # a whole module, not a state dict
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"model": {}}))  # a plain pickle, not a torch file
    empty = tmp_path / "empty.pt"
    empty.touch()
    for path, detail in [
        (module, "it holds a pickled torch.nn.modules.linear.Linear"),
        (raw, "a Python pickle"),
        (empty, "the file is empty"),
    ]:
        with pytest.raises(UserError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert info.value.what.startswith(f"not a cfnet checkpoint: {detail}"), message
        assert len(message.splitlines()) == 1 and "\x1b" not in message and "weights_only" not in message
