"""Training: `train(TrainConfig(...)) -> Path` on CPU, one GPU or several processes (DDP)."""

from cfnet.train.config import TrainConfig
from cfnet.train.loop import train

__all__ = ["TrainConfig", "train"]
