"""`cfnet ablate` on a reduced plan (two variants, one iteration, tiny sizes); the contrastive-off variant
under 2-process gloo DDP; the fused model's transformer branch exported, scored and refused without its decoder."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import cfnet.train
from cfnet.ablation.plan import Schedule, build_plan, select
from cfnet.ablation.runner import execute
from cfnet.checkpoint import load_checkpoint, load_model, save_checkpoint
from cfnet.cli import main
from cfnet.data.synth import synthesize
from cfnet.evaluate import evaluate_checkpoint
from cfnet.models import build_model
from cfnet.models.contrafusion import TransformerBranch
from cfnet.models.profile import count_gflops, count_parameters
from cfnet.train import train
from export.onnx import export_onnx

REDUCED = ["--variants", "no-contrastive", "--iters", "1", "--seeds", "1", "--crop", "64x64", "--batch-size", "1"]


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("ablate") / "synth", train=2, val=2, size=(64, 128), seed=0, workers=1)


@pytest.fixture(scope="module")
def ablation(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ablation") / "out"
    with pytest.raises(SystemExit) as info:
        main(["ablate", "--data", str(data), "--out", str(out), *REDUCED, "--json"])
    assert info.value.code == 0
    return out


def test_reduced_ablation_writes_every_report_file_with_consistent_figures(ablation: Path, data: Path) -> None:
    report = json.loads((ablation / "ablations.json").read_text())
    rows = {row["variant"]: row for row in report["rows"]}
    assert list(rows) == ["full", "full: transformer branch", "no-contrastive"]  # the reference comes along
    assert report["missing"] == []
    full, off = rows["full"]["miou"]["mean"], rows["no-contrastive"]["miou"]["mean"]
    assert rows["no-contrastive"]["miou_change"] == pytest.approx((off - full) / full)
    assert "15%" in rows["no-contrastive"]["paper_claim"] and "one seed" in rows["no-contrastive"]["verdict"]
    # each figure is the run's own final validation: rescoring its checkpoint gives it again
    scored = evaluate_checkpoint(ablation / "runs" / "no-contrastive" / "seed-0" / "last.pt", data, device="cpu")
    assert off == pytest.approx(scored["miou"], abs=1e-6)
    full_run = ablation / "runs" / "full" / "seed-0" / "last.pt"
    branch = evaluate_checkpoint(full_run, data, device="cpu", branch="transformer")
    assert rows["full: transformer branch"]["miou"]["mean"] == pytest.approx(branch["miou"], abs=1e-6)
    with (ablation / "ablations.csv").open(newline="") as handle:
        table = {row["variant"]: row for row in csv.DictReader(handle)}
    markdown = (ablation / "ablations.md").read_text()
    for name, row in rows.items():
        for key in ("miou", "mdice", "pixel_accuracy"):
            assert float(table[name][f"{key}_mean"]) == pytest.approx(row[key]["mean"])
            assert f"{row[key]['mean']:.3f}" in markdown.split(f"| {name} |")[1].splitlines()[0]
    assert (ablation / "ablations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Where the synthetic data agrees with the paper" in markdown


def test_rerun_skips_finished_runs_and_resumes_interrupted_ones(
    ablation: Path, data: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, bool]] = []
    record = lambda config, resume=False: calls.append((config.out, config.iters, resume))  # noqa: E731
    monkeypatch.setattr(cfnet.train, "train", record)
    before = json.loads((ablation / "ablations.json").read_text())["rows"]
    code, _, err = _cli(capsys, "ablate", "--data", str(data), "--out", str(ablation), *REDUCED)
    assert code == 0, err
    assert calls == [] and err.count("finished earlier, skipped") == 2
    assert json.loads((ablation / "ablations.json").read_text())["rows"] == before
    # a longer schedule over the same folders resumes each run from its last.pt
    plan = build_plan(Schedule(str(data), str(ablation), iters=2, seeds=1, crop=(64, 64), batch_size=1),
                      select("no-contrastive"))
    execute(plan, progress=False)
    assert [(Path(out).parent.name, iters, resume) for out, iters, resume in calls] == [
        ("full", 2, True), ("no-contrastive", 2, True)
    ]


def test_a_plan_stopped_by_sigterm_still_writes_the_report_of_what_finished(
    ablation: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(ablation / "runs" / "full", out / "runs" / "full")

    def interrupt(config: object, resume: bool = False) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # as systemd, docker or `timeout` stop a run

    monkeypatch.setattr(cfnet.train, "train", interrupt)
    code, _, err = _cli(capsys, "ablate", "--data", str(data), "--out", str(out), *REDUCED)
    assert code == 130 and "error: interrupted" in err
    report = json.loads((out / "ablations.json").read_text())
    assert [row["variant"] for row in report["rows"]] == ["full", "full: transformer branch"]
    assert report["missing"] == ["no-contrastive seed 0"]
    assert "Not run yet: no-contrastive seed 0." in (out / "ablations.md").read_text()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was the command's alone


def test_a_run_folder_of_other_settings_is_refused(ablation: Path, data: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _cli(capsys, "ablate", "--data", str(data), "--out", str(ablation), *REDUCED, "--aux-weight", "1")
    assert code == 2 and err.startswith("error: run folder was trained with aux_weight=") and len(err.splitlines()) == 1


def test_a_bad_preset_or_split_is_refused_before_the_plan_starts(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "empty").mkdir()
    cases = [
        (["--data", str(data), "--preset", "nosuch"], "error: unknown preset 'nosuch' for cfnet-pspnet (--preset: "),
        (["--data", str(tmp_path / "empty")], "error: no 'train' split: folder missing ("),
    ]
    for args, start in cases:
        code, _, err = _cli(capsys, "ablate", *args, "--out", str(tmp_path / "out"), *REDUCED)
        assert code == 2 and err.startswith(start) and len(err.splitlines()) == 1, err  # no bar, no training
        assert not (tmp_path / "out").exists()  # no empty report


def test_contrastive_off_variant_trains_under_two_process_gloo_ddp(data: Path, tmp_path: Path) -> None:
    plan = build_plan(Schedule(str(data), str(tmp_path), iters=2, seeds=1, crop=(64, 64), batch_size=1),
                      select("no-contrastive"))
    (run,) = [r for r in plan if r.variant.name == "no-contrastive"]
    assert run.config.loss_contrastive == 0
    train(replace(run.config, nproc=2, save_every=1))  # failed at step 2: the projection heads got no gradient
    last = load_checkpoint(run.folder / "last.pt")
    assert last["iteration"] == 2 and last["config"]["world_size"] == 2
    assert not any(k.startswith(("head_transformer.", "head_cnn.")) for k in last["model"])
    assert any(k.startswith("aux_decoder.") for k in last["model"])
    assert not torch.equal(last["model"]["aux_decoder.classifier.weight"],
                           load_checkpoint(run.folder / "iter_000001.pt")["model"]["aux_decoder.classifier.weight"])


def _fused_checkpoint(path: Path, parts: set[str]) -> Path:
    torch.manual_seed(0)
    model = build_model("cfnet-pspnet", preset="tiny")
    model.drop_training_modules(parts)
    for module in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(path, model=model, iteration=1, config=dict(model.config))


def _parameters(path: Path) -> int:
    return sum(int(np.prod(init.dims)) for init in onnx.load(str(path)).graph.initializer)


def test_branch_export_has_segformers_size_and_matches_the_fused_branch(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = _fused_checkpoint(tmp_path / "fused.pt", {"embeddings", "aux"})
    fused = load_model(checkpoint)
    branch = load_model(checkpoint, branch="transformer")
    segformer = build_model("segformer", preset="tiny")
    assert count_parameters(branch) == count_parameters(segformer)
    assert count_gflops(branch, (64, 128)) == pytest.approx(count_gflops(segformer, (64, 128)))
    out, reference = tmp_path / "branch.onnx", tmp_path / "segformer.onnx"
    code, printed, err = _cli(capsys, "export", "onnx", "--checkpoint", str(checkpoint), "--branch", "transformer",
                              "--out", str(out), "--size", "64x64", "--json")
    assert code == 0, err
    exported = json.loads(printed)
    metadata = exported["metadata"]
    assert metadata["cfnet.branch"] == "transformer" and metadata["cfnet.model"] == "cfnet-pspnet"
    assert all(p["agreement"] >= 0.9999 for p in exported["parity"].values())
    segformer.encoder.load_state_dict(branch.transformer.state_dict())  # segformer alone, with the branch's weights
    segformer.decoder.load_state_dict(branch.aux_decoder.state_dict())
    export_onnx(segformer.eval(), reference, size=(64, 64))
    assert _parameters(out) == _parameters(reference)  # the same graph size as segformer alone
    import onnxruntime as ort

    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = fused.forward_train(x)["aux_logits"].numpy()  # the fused model's own branch output
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)
    assert isinstance(branch, TransformerBranch)


def test_branch_of_a_checkpoint_without_the_aux_decoder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, data: Path
) -> None:
    checkpoint = _fused_checkpoint(tmp_path / "old.pt", {"embeddings"})
    assert load_model(checkpoint).aux_decoder is None  # the full model still loads
    out = tmp_path / "branch.onnx"
    code, _, err = _cli(capsys, "export", "onnx", "--checkpoint", str(checkpoint), "--branch", "transformer",
                        "--out", str(out))
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: checkpoint has no auxiliary transformer decoder") and str(checkpoint) in err
    assert not out.exists()
    code, _, err = _cli(capsys, "evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--branch",
                        "transformer")
    assert code == 2 and err.startswith("error: checkpoint has no auxiliary transformer decoder")


def test_bench_measures_the_branch_beside_the_full_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench"
    code, _, err = _cli(capsys, "bench", "--models", "cfnet-pspnet,cfnet-pspnet:transformer", "--preset", "tiny",
                        "--size", "64x64", "--backends", "torch,onnxruntime", "--warmup", "0", "--iters", "1",
                        "--threads", "1", "--out", str(out))
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    models = {m["model"]: m for m in result["models"]}
    assert list(models) == ["cfnet-pspnet", "cfnet-pspnet:transformer"]
    assert round(models["cfnet-pspnet:transformer"]["params_m"] * 1e6) == count_parameters(
        build_model("segformer", preset="tiny"))
    rows = {(r["model"], r["backend"]): r for r in result["rows"]}
    assert rows[("cfnet-pspnet:transformer", "onnxruntime")]["median_ms"] > 0
