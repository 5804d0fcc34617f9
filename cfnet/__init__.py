"""cfnet: ContraFusionNet semantic segmentation, from training to the edge."""

__version__ = "0.1.0"
