"""`build_model(name, ...)`: the zoo by name. Each family module exposes `PRESETS` and `build(...)`."""

from __future__ import annotations

import importlib
from pathlib import Path

from cfnet.errors import UserError
from cfnet.models.base import SegmentationModel

FAMILIES: dict[str, str] = {
    "unet": "cfnet.models.unet",
    "deeplabv3": "cfnet.models.deeplabv3",
    "pspnet": "cfnet.models.pspnet",
    "hrnet": "cfnet.models.hrnet",
    "segformer": "cfnet.models.segformer",
    "cfnet-pspnet": "cfnet.models.contrafusion",
    "cfnet-hrnet": "cfnet.models.contrafusion",
}
MODEL_NAMES = tuple(FAMILIES)


def presets(name: str) -> tuple[str, ...]:
    """The presets model `name` offers."""
    return tuple(_family(name).presets(name))


def build_model(
    name: str,
    num_classes: int = 19,
    preset: str = "paper",
    backbone_weights: str | Path | None = None,
) -> SegmentationModel:
    """Build zoo model `name` with `preset`; `backbone_weights` is a local file of pretrained encoder weights."""
    family = _family(name)
    available = family.presets(name)
    if preset not in available:
        raise UserError(f"unknown preset '{preset}' for {name}", f"choose from {', '.join(available)}")
    if backbone_weights is not None and not Path(backbone_weights).exists():
        raise UserError("backbone weights not found", str(backbone_weights))
    model: SegmentationModel = family.build(name, preset, num_classes, backbone_weights)
    model.config = {"model": name, "preset": preset, "num_classes": num_classes}
    return model


def _family(name: str):  # noqa: ANN202 - a module
    if name not in FAMILIES:
        raise UserError(f"unknown model '{name}'", f"choose from {', '.join(MODEL_NAMES)}")
    return importlib.import_module(FAMILIES[name])
