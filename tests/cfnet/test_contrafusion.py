"""ContraFusionNet: shapes, per-scale fusion on the transformer grid, training outputs, one training step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from torch import Tensor, nn

from cfnet.losses import SegmentationLoss
from cfnet.models import build_model
from cfnet.models.contrafusion import ContraFusionNet
from cfnet.models.segformer import PRESETS

FUSED = ["cfnet-pspnet", "cfnet-hrnet"]


class OddStrideEncoder(nn.Module):
    """A CNN stand-in whose strides (2, 4, 8, 8) match none of the transformer's."""

    out_channels = (4, 6, 8, 10)

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, stride=s, padding=1)
            for cin, cout, s in zip((3, 4, 6, 8), self.out_channels, (2, 2, 2, 1), strict=True)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for conv in self.convs:
            x = torch.relu(conv(x))
            features.append(x)
        return features


@pytest.mark.parametrize("name", FUSED)
def test_tiny_gives_logits_at_the_input_size(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, preset="tiny").eval()
    assert model.size_divisor == 32
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 128)).shape == (1, 19, 64, 128)
        assert model(torch.randn(1, 3, 50, 70)).shape == (1, 19, 50, 70)


@pytest.mark.parametrize("name", FUSED)
def test_forward_train_returns_unit_embeddings_on_the_deepest_transformer_grid(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, preset="tiny").eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        out = model.forward_train(x)
        deepest = model.transformer(x)[-1]  # type: ignore[operator]
        torch.testing.assert_close(out["logits"], model(x))
    assert out["embed_transformer"].shape == out["embed_cnn"].shape == (2, 128, *deepest.shape[2:])
    for key in ("embed_transformer", "embed_cnn"):
        torch.testing.assert_close(out[key].norm(dim=1), torch.ones(2, *deepest.shape[2:]))


def test_inference_graph_does_not_run_the_projection_heads() -> None:
    class Forbidden(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            raise AssertionError("projection head used at inference")

    model = ContraFusionNet(PRESETS["tiny"], OddStrideEncoder(), num_classes=3).eval()
    model.head_transformer = Forbidden()
    model.head_cnn = Forbidden()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)


def test_each_scale_fuses_the_cnn_feature_resampled_to_the_transformer_grid() -> None:
    torch.manual_seed(0)
    model = ContraFusionNet(PRESETS["tiny"], OddStrideEncoder(), num_classes=3).eval()
    seen: list[tuple[int, ...]] = []
    for fuse in model.fusions:
        fuse.register_forward_hook(lambda _m, args, out: seen.append((*args[0].shape, *out.shape)))
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        model(x)
        transformer = model.transformer(x)
    for (n, c_in, h, w, n_out, c_out, h_out, w_out), t, c_cnn, width in zip(
        seen, transformer, OddStrideEncoder.out_channels, PRESETS["tiny"].widths, strict=True
    ):
        assert (h, w) == (h_out, w_out) == tuple(t.shape[2:])
        assert c_in == width + c_cnn and c_out == width and n == n_out == 1


@pytest.mark.parametrize("name", FUSED)
def test_one_training_step_is_finite_and_changes_every_part(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, preset="tiny", num_classes=5).train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss, parts = SegmentationLoss()(model.forward_train(torch.randn(1, 3, 64, 128)), torch.randint(0, 5, (1, 64, 128)))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and set(parts) == {"ce", "dice", "contrastive", "total"}
    changed = {k.split(".")[0] for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed == {"transformer", "cnn", "fusions", "decoder", "head_transformer", "head_cnn"}


def test_backbone_weights_load_into_the_transformer_branch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    c = PRESETS["tiny"]
    config = transformers.SegformerConfig(
        hidden_sizes=list(c.widths), depths=list(c.depths), num_attention_heads=list(c.heads)
    )
    hf = transformers.SegformerModel(config).eval()
    hf.save_pretrained(tmp_path)
    model = build_model("cfnet-hrnet", preset="tiny", backbone_weights=tmp_path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = hf(x, output_hidden_states=True).hidden_states
        got = model.transformer(x)  # type: ignore[operator]
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FUSED)
def test_paper_preset_builds_bigger_than_tiny(name: str) -> None:
    with torch.device("meta"):
        paper = sum(p.numel() for p in build_model(name, preset="paper").parameters())
        tiny = sum(p.numel() for p in build_model(name, preset="tiny").parameters())
    assert paper > 10 * tiny
