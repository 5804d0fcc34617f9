"""The model zoo: `build_model(name, num_classes=19, preset="paper", backbone_weights=None)`."""

from cfnet.models.base import SegmentationModel
from cfnet.models.registry import MODEL_NAMES, build_model, presets

__all__ = ["MODEL_NAMES", "SegmentationModel", "build_model", "presets"]
