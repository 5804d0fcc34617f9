"""`TrainConfig`: every option of a training run, JSON-able, saved in each checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfnet.errors import UserError

AMP_DTYPES = ("fp16", "bf16")
AUX_WEIGHT = 0.4
"""Default weight of the fused models' auxiliary transformer-branch loss (measured: docs/DESIGN.md, Ablations)."""
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """A training run. `iters` wins over `epochs`; `batch_size` is per process.

    `val_every` / `save_every`: iterations between validations / numbered checkpoints (0 = once per epoch).
    `keep_checkpoints`: how many numbered checkpoints (`iter_N.pt`) stay, the newest (0 = all).
    `log_every`: iterations between rows of `metrics.csv`.
    """

    model: str
    data: str
    out: str
    preset: str = "paper"
    num_classes: int = 19
    epochs: int | None = None
    iters: int | None = None
    batch_size: int = 1
    crop: tuple[int, int] = (512, 512)
    lr: float = 1e-4
    poly: bool = False
    poly_power: float = 0.9
    weight_decay: float = 0.0
    nproc: int = 1
    amp: bool = False
    amp_dtype: str = "fp16"
    seed: int = 0
    backbone_weights: str | None = None
    val_every: int = 0
    save_every: int = 0
    keep_checkpoints: int = 3
    log_every: int = 10
    workers: int = 2
    device: str = "auto"
    loss_ce: float = 1.0
    loss_dice: float = 1.0
    loss_contrastive: float = 0.1
    temperature: float = 0.07
    aux_weight: float = AUX_WEIGHT

    def __post_init__(self) -> None:
        self.crop = (int(self.crop[0]), int(self.crop[1]))
        if self.amp_dtype not in AMP_DTYPES:
            raise UserError(f"unknown AMP dtype '{self.amp_dtype}'", f"choose from {', '.join(AMP_DTYPES)}")
        if self.device not in DEVICES:
            raise UserError(f"unknown device '{self.device}'", f"choose from {', '.join(DEVICES)}")
        positive = {"batch_size": self.batch_size, "nproc": self.nproc, "log_every": self.log_every}
        for key, value in positive.items():
            if value < 1:
                raise UserError(f"{key.replace('_', '-')} must be at least 1", f"got {value}")
        if self.iters is not None and self.iters < 1 or self.epochs is not None and self.epochs < 1:
            raise UserError("iters and epochs must be at least 1", f"got iters={self.iters} epochs={self.epochs}")
        if min(self.val_every, self.save_every, self.keep_checkpoints, self.workers) < 0:
            raise UserError("val-every, save-every, keep-checkpoints and workers cannot be negative", "cfnet train")
        if min(self.loss_ce, self.loss_dice, self.loss_contrastive, self.aux_weight) < 0:
            raise UserError("loss weights cannot be negative", "--aux-weight and the loss weights")
        if self.temperature <= 0:
            raise UserError("temperature must be positive", f"got {self.temperature}")
        if self.lr <= 0:
            raise UserError("lr must be positive", f"got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the crop as a list)."""
        out = dataclasses.asdict(self)
        out["crop"] = list(self.crop)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are ignored (checkpoints of newer versions)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


RESUME_OVERRIDES = (
    "data", "iters", "epochs", "workers", "device", "nproc", "val_every", "save_every", "keep_checkpoints", "log_every"
)
"""Options a resumed run takes from the command line; every other option comes from its checkpoint."""


def resumed_config(out: str | Path, overrides: dict[str, Any]) -> TrainConfig:
    """The config saved in `out/last.pt`, with the `RESUME_OVERRIDES` among `overrides` applied."""
    from cfnet.checkpoint import load_checkpoint

    saved = {"aux_weight": 0.0, **load_checkpoint(Path(out) / "last.pt")["config"]}  # runs from before the aux
    changes = {k: v for k, v in overrides.items() if k in RESUME_OVERRIDES}
    if "iters" in changes:
        changes.setdefault("epochs", None)
    elif "epochs" in changes:
        changes["iters"] = None
    return TrainConfig.from_dict({**saved, **changes, "out": str(out)})
