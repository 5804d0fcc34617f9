"""Checkpoints: plain containers of tensors and numbers, written atomically, read with `weights_only=True`.

A checkpoint is a dict: `format`, `model` (state dict), `optimizer`, `scaler` (state dicts or None),
`iteration`, `config` (JSON-able: model, preset, num_classes and the training options), `metrics`, and
`rng` (torch, CUDA, numpy and python `random` states, one entry per training process).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cfnet.atomic import atomic_path
from cfnet.errors import UserError
from cfnet.models.base import SegmentationModel
from cfnet.torchfile import load_torch_file

FORMAT = "cfnet-checkpoint/1"


def capture_rng() -> dict[str, Any]:
    """The RNG states of torch (CPU and CUDA), numpy and python `random` as tensors, lists and numbers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": int(version), "state": list(internal), "gauss_next": gauss_next},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what `capture_rng` captured."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    iteration: int,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    rng: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a checkpoint to `path` through a temp file in the same folder; returns `path`.

    `config` must be JSON-able and hold at least `model`, `preset` and `num_classes`. `rng` is one
    `capture_rng()` per training process (rank order); by default this process's state.
    """
    path = Path(path)
    missing = {"model", "preset", "num_classes"} - set(config)
    if missing:
        raise ValueError(f"checkpoint config lacks {sorted(missing)}")
    payload = {
        "format": FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "iteration": int(iteration),
        "config": dict(config),
        "metrics": dict(metrics or {}),
        "rng": rng if rng is not None else [capture_rng()],
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with `torch.load(weights_only=True)`; anything else is a `UserError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found", str(path))
    payload = load_torch_file(path, "cfnet checkpoint")
    config = payload.get("config") if isinstance(payload, dict) else None
    if (
        not isinstance(payload, dict)
        or payload.get("format") != FORMAT
        or not isinstance(payload.get("model"), dict)
        or not isinstance(config, dict)
        or not {"model", "preset", "num_classes"} <= config.keys()
    ):
        raise UserError("not a cfnet checkpoint", str(path))
    return payload


BRANCHES = ("transformer",)


def load_model(path: str | Path, expect_model: str | None = None, branch: str | None = None) -> SegmentationModel:
    """The model of checkpoint `path`, built from its saved config, in eval mode on the CPU.

    `expect_model`: the model name the caller needs; a checkpoint of another model is a `UserError`.
    `branch="transformer"`: a fused model's MiT encoder and auxiliary decoder alone (`TransformerBranch`).
    The training-only parts (projection heads, auxiliary decoder) are built only when the checkpoint holds them.
    """
    from cfnet.models import build_model

    payload = load_checkpoint(path)
    config = payload["config"]
    name = config.get("model")
    if expect_model is not None and name != expect_model:
        raise UserError(f"checkpoint holds model '{name}', expected '{expect_model}'", str(path))
    model = build_model(str(name), num_classes=int(config["num_classes"]), preset=str(config["preset"]))
    model.drop_training_modules(model.parts_in(payload["model"]))
    try:
        model.load_state_dict(payload["model"], strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise UserError(f"checkpoint weights do not fit model '{name}': {detail[:200]}", str(path)) from exc
    return model.eval() if branch is None else _branch(model, branch, path).eval()


def _branch(model: SegmentationModel, branch: str, path: str | Path) -> SegmentationModel:
    from cfnet.models.contrafusion import ContraFusionNet, TransformerBranch

    if branch not in BRANCHES:
        raise UserError(f"unknown branch '{branch}'", f"choose from {', '.join(BRANCHES)}")
    if not isinstance(model, ContraFusionNet):
        fused = "a fused model (cfnet-pspnet, cfnet-hrnet)"
        raise UserError(f"--branch {branch} needs {fused}, not '{model.config['model']}'", str(path))
    if model.aux_decoder is None:
        raise UserError(
            "checkpoint has no auxiliary transformer decoder (trained before it, or with --aux-weight 0): "
            "retrain with --aux-weight > 0",
            str(path),
        )
    return TransformerBranch(model)
