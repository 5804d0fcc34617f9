"""The paper's model table (ContraFusionNet): parameters, testing time and mIoU, measured at 512x512 on an RTX 3060."""

from __future__ import annotations

from dataclasses import dataclass

PAPER_SETUP = "512x512, RTX 3060"


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's table: parameters in millions, testing time in seconds, Cityscapes val mIoU."""

    params_m: float
    time_s: float
    miou: float


PAPER: dict[str, PaperRow] = {
    "unet": PaperRow(34.5, 0.18, 0.226),
    "deeplabv3": PaperRow(65.92, 0.272, 0.198),
    "pspnet": PaperRow(48.7, 0.24, 0.213),
    "hrnet": PaperRow(1.5, 0.174, 0.228),
    "segformer": PaperRow(17.8, 0.15, 0.289),
    "cfnet-pspnet": PaperRow(17.8, 0.20, 0.622),
    "cfnet-hrnet": PaperRow(17.8, 0.20, 0.629),
}
