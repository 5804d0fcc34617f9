"""Data: the Cityscapes label table, the Cityscapes-layout dataset, transforms and the synthetic generator."""

from cfnet.data.labels import IGNORE_INDEX, MEAN, NUM_CLASSES, PALETTE, STD, TRAIN_CLASSES

__all__ = ["IGNORE_INDEX", "MEAN", "NUM_CLASSES", "PALETTE", "STD", "TRAIN_CLASSES"]
