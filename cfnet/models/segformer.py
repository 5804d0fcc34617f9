"""SegFormer (Xie et al., 2021): Mix Transformer (MiT) encoder and all-MLP decoder.

The encoder follows the paper and the Hugging Face `SegformerModel`: four stages, each an OverlapPatchEmbed
(7x7 stride 4, then 3x3 stride 2), blocks of efficient self-attention (keys and values spatially reduced by a
strided conv + LayerNorm) and Mix-FFN (Linear, depthwise 3x3, GELU, Linear) with stochastic depth, and a
per-stage LayerNorm. `load_hf_weights` maps a transformers checkpoint onto it key by key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cfnet.errors import UserError
from cfnet.models.base import SegmentationModel
from cfnet.torchfile import load_torch_file


@dataclass(frozen=True)
class MiTConfig:
    """Layer shapes of a Mix Transformer and its decoder width."""

    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    heads: tuple[int, int, int, int]
    reductions: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4
    drop_path: float = 0.1
    decoder_dim: int = 256


PRESETS: dict[str, MiTConfig] = {
    "tiny": MiTConfig(widths=(16, 32, 64, 128), depths=(1, 1, 1, 1), heads=(1, 1, 2, 4), decoder_dim=64),
    "b0": MiTConfig(widths=(32, 64, 160, 256), depths=(2, 2, 2, 2), heads=(1, 2, 5, 8), decoder_dim=256),
    "b1": MiTConfig(widths=(64, 128, 320, 512), depths=(2, 2, 2, 2), heads=(1, 2, 5, 8), decoder_dim=256),
    "b2": MiTConfig(widths=(64, 128, 320, 512), depths=(3, 4, 6, 3), heads=(1, 2, 5, 8), decoder_dim=768),
    "paper": MiTConfig(widths=(64, 128, 256, 512), depths=(3, 4, 6, 3), heads=(1, 2, 4, 8), decoder_dim=256),
}


def _tokens(x: Tensor) -> Tensor:
    """`N x C x H x W` -> `N x HW x C`."""
    return x.flatten(2).transpose(1, 2)


def _grid(x: Tensor, like: Tensor) -> Tensor:
    """`N x HW x C` -> `N x C x H x W`, with H and W taken from the feature map `like` (stays dynamic in ONNX)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], like.shape[2], like.shape[3])


class OverlapPatchEmbed(nn.Module):
    """Strided conv whose kernel overlaps its neighbours (padding k // 2), then LayerNorm over channels."""

    def __init__(self, in_channels: int, width: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the tokens `N x HW x C` and the feature map `N x C x H x W` they come from."""
        grid = self.proj(x)
        return self.norm(_tokens(grid)), grid


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from a grid shrunk `reduction` times per side."""

    def __init__(self, width: int, heads: int, reduction: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.reduction = reduction
        if reduction > 1:
            self.sr = nn.Conv2d(width, width, reduction, stride=reduction)
            self.sr_norm = nn.LayerNorm(width)

    def _split(self, x: Tensor) -> Tensor:
        """`N x L x C` -> `N x heads x L x C/heads`."""
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, x: Tensor, grid: Tensor) -> Tensor:
        kv = x
        if self.reduction > 1:
            kv = self.sr_norm(_tokens(self.sr(_grid(x, grid))))
        q, k, v = self._split(self.q(x)), self._split(self.k(kv)), self._split(self.v(kv))
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.proj(out)


class MixFFN(nn.Module):
    """Linear, depthwise 3x3 conv (the positional cue), GELU, Linear."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor, grid: Tensor) -> Tensor:
        x = self.fc1(x)
        x = _tokens(self.dwconv(_grid(x, grid)))
        return self.fc2(self.act(x))


class DropPath(nn.Module):
    """Stochastic depth: during training, zero a sample's residual branch with probability `p` (rescaled)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device) < keep
        return x * mask.to(x.dtype) / keep


class MiTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + ffn(norm(x)), both with drop path."""

    def __init__(self, width: int, heads: int, reduction: int, mlp_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = EfficientSelfAttention(width, heads, reduction)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = MixFFN(width, width * mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, grid: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.ffn(self.norm2(x), grid))


class MiTStage(nn.Module):
    """OverlapPatchEmbed, `depth` blocks, LayerNorm; returns `N x C x H x W`."""

    def __init__(
        self, in_channels: int, width: int, kernel: int, stride: int, depth: int, heads: int, reduction: int,
        mlp_ratio: int, drop_paths: Sequence[float],
    ) -> None:
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_channels, width, kernel, stride)
        self.blocks = nn.ModuleList(MiTBlock(width, heads, reduction, mlp_ratio, drop_paths[i]) for i in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        tokens, grid = self.patch_embed(x)
        for block in self.blocks:
            tokens = block(tokens, grid)
        return _grid(self.norm(tokens), grid)


class MixTransformer(nn.Module):
    """The MiT encoder: `forward(x)` returns the four stage outputs at strides 4, 8, 16 and 32."""

    def __init__(self, config: MiTConfig, in_channels: int = 3) -> None:
        super().__init__()
        total = sum(config.depths)
        rates = [config.drop_path * i / max(total - 1, 1) for i in range(total)]
        stages = []
        for i in range(4):
            start = sum(config.depths[:i])
            stages.append(
                MiTStage(
                    in_channels if i == 0 else config.widths[i - 1], config.widths[i],
                    kernel=7 if i == 0 else 3, stride=4 if i == 0 else 2, depth=config.depths[i],
                    heads=config.heads[i], reduction=config.reductions[i], mlp_ratio=config.mlp_ratio,
                    drop_paths=rates[start : start + config.depths[i]],
                )
            )
        self.stages = nn.ModuleList(stages)
        self.out_channels = config.widths
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class AllMLPDecoder(nn.Module):
    """Per-scale linear to `dim`, upsample to the 1/4 grid, concatenate (deepest first), 1x1 fuse conv + BN +
    ReLU, dropout, 1x1 classifier. Returns logits at the 1/4 grid."""

    def __init__(self, in_channels: Sequence[int], dim: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(dim * len(in_channels), dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        size = features[0].shape[2:]
        scaled = [
            F.interpolate(linear(f), size=size, mode="bilinear", align_corners=False)
            for linear, f in zip(self.linears, features, strict=True)
        ]
        return self.classifier(self.dropout(self.fuse(torch.cat(scaled[::-1], dim=1))))


class SegFormer(SegmentationModel):
    """MiT encoder + all-MLP decoder; logits bilinearly upsampled from 1/4 to the input size."""

    def __init__(self, config: MiTConfig, num_classes: int) -> None:
        super().__init__()
        self.encoder = MixTransformer(config)
        self.decoder = AllMLPDecoder(config.widths, config.decoder_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.decoder(self.encoder(x))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def _init_weights(module: nn.Module) -> None:
    """The reference initialisation: truncated normal (0.02) linears, fan-out normal convs, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, std=(2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# transformers' `SegformerModel` names -> ours. Both the names `save_pretrained` writes (and the Hub's MiT
# checkpoints hold) and the module names of transformers >= 5 (what `torch.save(model.state_dict())` gives).
# Checkpoints of the task models (`SegformerForSemanticSegmentation`, ...) carry a `segformer.` prefix.
_HF_STAGE_RULES: tuple[tuple[str, str], ...] = (
    (r"encoder\.patch_embeddings\.(\d)\.proj\.", r"stages.\1.patch_embed.proj."),
    (r"encoder\.patch_embeddings\.(\d)\.layer_norm\.", r"stages.\1.patch_embed.norm."),
    (r"encoder\.layer_norm\.(\d)\.", r"stages.\1.norm."),
    (r"stages\.(\d)\.patch_embeddings\.proj\.", r"stages.\1.patch_embed.proj."),
    (r"stages\.(\d)\.patch_embeddings\.layer_norm\.", r"stages.\1.patch_embed.norm."),
    (r"stages\.(\d)\.layer_norm\.", r"stages.\1.norm."),
)
_HF_BLOCK_PREFIXES = (r"encoder\.block\.(\d)\.(\d+)\.", r"stages\.(\d)\.blocks\.(\d+)\.")
_HF_BLOCK_PARTS: dict[str, str] = {  # inside a block: transformers < 5 and >= 5 names -> ours
    "layer_norm_1.": "norm1.",
    "layernorm_before.": "norm1.",
    "attention.self.query.": "attn.q.",
    "attention.q_proj.": "attn.q.",
    "attention.self.key.": "attn.k.",
    "attention.k_proj.": "attn.k.",
    "attention.self.value.": "attn.v.",
    "attention.v_proj.": "attn.v.",
    "attention.self.sr.": "attn.sr.",
    "attention.sequence_reduction.sequence_reduction.": "attn.sr.",
    "attention.self.layer_norm.": "attn.sr_norm.",
    "attention.sequence_reduction.layer_norm.": "attn.sr_norm.",
    "attention.output.dense.": "attn.proj.",
    "attention.o_proj.": "attn.proj.",
    "layer_norm_2.": "norm2.",
    "layernorm_after.": "norm2.",
    "mlp.dense1.": "ffn.fc1.",
    "mlp.fc1.": "ffn.fc1.",
    "mlp.dwconv.dwconv.": "ffn.dwconv.",
    "mlp.dense2.": "ffn.fc2.",
    "mlp.fc2.": "ffn.fc2.",
}
_HF_KEY_MAP: tuple[tuple[str, str], ...] = _HF_STAGE_RULES + tuple(
    (prefix + re.escape(theirs), r"stages.\1.blocks.\2." + ours)
    for prefix in _HF_BLOCK_PREFIXES
    for theirs, ours in _HF_BLOCK_PARTS.items()
)
_HF_HEAD_PREFIXES = ("decode_head.", "classifier.")  # task heads: not part of the encoder, skipped


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a transformers save: a `save_pretrained` folder, `model.safetensors` or `pytorch_model.bin`."""
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "pytorch_model.bin"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise UserError("no model.safetensors or pytorch_model.bin in the weights folder", str(path))
        path = found[0]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # corrupt or foreign file: one line for the user
            raise UserError(f"cannot read MiT weights: {exc}".splitlines()[0], str(path)) from exc
    state = load_torch_file(path, "MiT weights file")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError("MiT weights file does not hold a state dict of tensors", str(path))
    return state


def map_hf_keys(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Rename transformers `SegformerModel` keys to `MixTransformer` keys; returns the mapped dict and the
    keys no rule matched (task-head keys are dropped silently)."""
    mapped: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        name = key.removeprefix("segformer.")
        if name.startswith(_HF_HEAD_PREFIXES):
            continue
        for pattern, target in _HF_KEY_MAP:
            new, hits = re.subn("^" + pattern, target, name)
            if hits:
                mapped[new] = value
                break
        else:
            unknown.append(key)
    return mapped, unknown


def load_hf_weights(encoder: MixTransformer, path: str | Path) -> None:
    """Load MiT weights saved by transformers into `encoder`; any missing, unexpected or misshapen key is a
    `UserError` naming the file."""
    path = Path(path)
    mapped, unknown = map_hf_keys(_read_state_dict(path))
    own = encoder.state_dict()
    missing = sorted(set(own) - set(mapped))
    unknown += sorted(set(mapped) - set(own))
    if missing or unknown:
        detail = (f"missing {missing[:3]}" if missing else "") + (f" unexpected {unknown[:3]}" if unknown else "")
        raise UserError(f"MiT weights do not fit this encoder: {detail.strip()}", str(path))
    wrong = [k for k, v in mapped.items() if v.shape != own[k].shape]
    if wrong:
        raise UserError(
            f"MiT weights have other shapes than this preset: {wrong[0]} {tuple(mapped[wrong[0]].shape)} "
            f"vs {tuple(own[wrong[0]].shape)}",
            str(path),
        )
    encoder.load_state_dict(mapped)


def presets(name: str) -> tuple[str, ...]:
    """SegFormer's presets (the registry passes the model name)."""
    return tuple(PRESETS)


def build(name: str, preset: str, num_classes: int, backbone_weights: str | Path | None) -> SegFormer:
    """Build SegFormer `preset`; `backbone_weights` is a transformers MiT save (folder or weights file)."""
    model = SegFormer(PRESETS[preset], num_classes)
    if backbone_weights is not None:
        load_hf_weights(model.encoder, backbone_weights)
    return model
