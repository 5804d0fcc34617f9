"""SegFormer: stage outputs against transformers' reference implementation, weight loading (also into the fused
models' transformer branch), shapes, training, export to ONNX with dynamic H and W."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers
from torch import Tensor, nn

from cfnet.cli import main
from cfnet.data.synth import synthesize
from cfnet.errors import UserError
from cfnet.losses import SegmentationLoss
from cfnet.models import build_model
from cfnet.models.contrafusion import ContraFusionNet
from cfnet.models.segformer import PRESETS, DropPath, MiTConfig, MixTransformer, load_hf_weights, map_hf_keys


def _hf_model(preset: str) -> transformers.SegformerModel:
    """A transformers `SegformerModel` with the layer shapes of our `preset` (on the meta device: shapes only)."""
    c = PRESETS[preset]
    config = transformers.SegformerConfig(
        hidden_sizes=list(c.widths),
        depths=list(c.depths),
        num_attention_heads=list(c.heads),
        sr_ratios=list(c.reductions),
        mlp_ratios=[c.mlp_ratio] * 4,
        decoder_hidden_size=c.decoder_dim,
    )
    with torch.device("meta"):
        return transformers.SegformerModel(config)


@pytest.fixture(scope="module")
def hf_b0(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Tensor, tuple[Tensor, ...], dict[str, Tensor]]:
    """A random transformers b0 saved with `save_pretrained`: its folder, an input, its hidden states, its
    in-memory state dict (transformers >= 5 module names)."""
    torch.manual_seed(0)
    assert list(transformers.SegformerConfig().hidden_sizes) == list(PRESETS["b0"].widths)  # the defaults are b0
    model = transformers.SegformerModel(transformers.SegformerConfig()).eval()
    folder = tmp_path_factory.mktemp("mit_b0")
    model.save_pretrained(folder)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        hidden = model(x, output_hidden_states=True).hidden_states
    return folder, x, hidden, model.state_dict()


def _assert_same_stages(hf_b0: tuple[Path, Tensor, tuple[Tensor, ...], dict[str, Tensor]], ours: nn.Module) -> None:
    _, x, expected, _ = hf_b0
    with torch.no_grad():
        got = ours.eval()(x)
    assert len(got) == len(expected) == 4
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_stage_outputs_equal_transformers_after_loading_save_pretrained_folder(hf_b0) -> None:
    model = build_model("segformer", preset="b0", backbone_weights=hf_b0[0])
    _assert_same_stages(hf_b0, model.encoder)


def test_loads_safetensors_file_and_bin_files_with_either_naming(hf_b0, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder, _, _, modules = hf_b0
    encoder = MixTransformer(PRESETS["b0"])
    load_hf_weights(encoder, folder / "model.safetensors")
    _assert_same_stages(hf_b0, encoder)

    legacy = {"segformer." + k: v for k, v in load_file(str(folder / "model.safetensors")).items()}
    torch.save(legacy, tmp_path / "pytorch_model.bin")  # a task-model checkpoint: prefixed keys
    encoder = MixTransformer(PRESETS["b0"])
    load_hf_weights(encoder, tmp_path)
    _assert_same_stages(hf_b0, encoder)

    torch.save(modules, tmp_path / "modules.bin")  # transformers >= 5 module names
    encoder = MixTransformer(PRESETS["b0"])
    load_hf_weights(encoder, tmp_path / "modules.bin")
    _assert_same_stages(hf_b0, encoder)


def test_weights_that_do_not_fit_are_a_user_error_naming_the_file(hf_b0, tmp_path: Path) -> None:
    folder = hf_b0[0]
    narrow = MiTConfig(widths=(16, 32, 64, 128), depths=(2, 2, 2, 2), heads=(1, 1, 2, 4))  # b0's keys, other shapes
    with pytest.raises(UserError, match="shapes") as shapes:
        load_hf_weights(MixTransformer(narrow), folder)
    assert shapes.value.where == str(folder)
    with pytest.raises(UserError, match="do not fit") as keys:
        build_model("segformer", preset="tiny", backbone_weights=folder)  # depth 1: b0's second blocks are extra
    assert keys.value.where == str(folder)

    extra = tmp_path / "extra.bin"
    state = MixTransformer(PRESETS["b0"]).state_dict()
    torch.save({**{f"encoder.{k}": v for k, v in state.items()}, "something.else": torch.zeros(1)}, extra)
    with pytest.raises(UserError, match="do not fit") as unexpected:
        load_hf_weights(MixTransformer(PRESETS["b0"]), extra)
    assert unexpected.value.where == str(extra)

    corrupt = tmp_path / "model.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError) as unreadable:
        load_hf_weights(MixTransformer(PRESETS["b0"]), corrupt)
    assert unreadable.value.where == str(corrupt)


# The published MiT encoders (nvidia/mit-b0 .. mit-b2 config.json): widths, depths; heads 1/2/5/8 and
# reductions 8/4/2/1 for all three.
OFFICIAL_MIT = {"b0": ([32, 64, 160, 256], [2, 2, 2, 2]), "b1": ([64, 128, 320, 512], [2, 2, 2, 2]),
                "b2": ([64, 128, 320, 512], [3, 4, 6, 3])}


@pytest.mark.parametrize("name", ["cfnet-pspnet", "cfnet-hrnet"])
@pytest.mark.parametrize("preset", sorted(OFFICIAL_MIT))
def test_fused_mit_presets_take_every_tensor_of_the_official_mit_shapes(name: str, preset: str) -> None:
    widths, depths = OFFICIAL_MIT[preset]
    config = transformers.SegformerConfig(hidden_sizes=widths, depths=depths, num_attention_heads=[1, 2, 5, 8],
                                          sr_ratios=[8, 4, 2, 1])
    with torch.device("meta"):
        official = transformers.SegformerModel(config).state_dict()
        fused = build_model(name, preset=preset)
    assert isinstance(fused, ContraFusionNet)
    mapped, unknown = map_hf_keys(official)
    own = fused.transformer.state_dict()
    assert unknown == [] and mapped.keys() == own.keys()
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in own.items()}


@pytest.mark.parametrize("name", ["cfnet-pspnet", "cfnet-hrnet"])
def test_fused_b0_loads_a_save_pretrained_mit_and_its_stages_equal_transformers(hf_b0, name: str) -> None:
    model = build_model(name, preset="b0", backbone_weights=hf_b0[0])
    assert isinstance(model, ContraFusionNet)
    _assert_same_stages(hf_b0, model.transformer)


def test_train_takes_a_save_pretrained_folder_as_backbone_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    c = PRESETS["tiny"]  # a small random MiT with the tiny preset's shapes keeps the run short
    config = transformers.SegformerConfig(hidden_sizes=list(c.widths), depths=list(c.depths),
                                          num_attention_heads=list(c.heads), sr_ratios=list(c.reductions))
    mit = transformers.SegformerModel(config)
    mit.save_pretrained(tmp_path / "mit")
    data = synthesize(tmp_path / "synth", train=1, val=1, size=(64, 128), seed=0, workers=1)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["train", "--model", "segformer", "--preset", "tiny", "--backbone-weights", str(tmp_path / "mit"),
              "--data", str(data), "--out", str(run), "--iters", "1", "--crop", "64x64", "--lr", "1e-12",
              "--workers", "0", "--device", "cpu"])
    assert info.value.code == 0, capsys.readouterr().err
    trained = torch.load(run / "last.pt", weights_only=True)["model"]
    mapped, _ = map_hf_keys(mit.state_dict())
    for key, value in mapped.items():  # loaded, then moved by at most lr = 1e-12
        torch.testing.assert_close(trained[f"encoder.{key}"], value, atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset", ["b0", "b1", "b2", "paper"])
def test_encoder_parameter_count_equals_transformers(preset: str) -> None:
    with torch.device("meta"):
        ours = sum(p.numel() for p in MixTransformer(PRESETS[preset]).parameters())
    reference = sum(p.numel() for p in _hf_model(preset).parameters())
    assert ours == reference


def test_tiny_gives_logits_at_the_input_size_for_any_size() -> None:
    torch.manual_seed(0)
    model = build_model("segformer", preset="tiny").eval()
    assert model.size_divisor == 32
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 128)).shape == (1, 19, 64, 128)
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 19, 50, 70)


def test_one_training_step_is_finite_and_changes_the_weights() -> None:
    torch.manual_seed(0)
    model = build_model("segformer", preset="tiny", num_classes=5).train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = torch.randint(0, 5, (2, 64, 96))
    loss, parts = SegmentationLoss()(model.forward_train(torch.randn(2, 3, 64, 96)), target)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and "contrastive" not in parts
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.stages.0.") for k in changed)
    assert any(k.startswith("decoder.classifier") for k in changed)


def test_drop_path_drops_whole_samples_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    drop = DropPath(0.5).train()
    out = drop(torch.ones(4000, 3, 2))
    per_sample = out.flatten(1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2).all(1))
    assert abs(out.mean().item() - 1.0) < 0.1
    assert torch.equal(drop.eval()(torch.ones(3, 2)), torch.ones(3, 2))


def test_exports_to_onnx_with_dynamic_height_and_width(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("segformer", preset="tiny").eval()
    path = tmp_path / "segformer.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 64, 96),),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"images": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 128, 160), (2, 3, 50, 70)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4)
