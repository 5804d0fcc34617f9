"""The run's record: `metrics.csv`, `curves.png` (loss, val mIoU, Dice, pixel accuracy), TensorBoard events.

Training rows carry the loss and its parts averaged since the previous row (over a resume too: checkpoints
carry the `LossWindow`); validation rows carry the val scores. TensorBoard event files are written only when
`tensorboard` is importable.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnet.atomic import write_bytes

COLUMNS = (
    "iteration",
    "epoch",
    "lr",
    "loss",
    "loss_ce",
    "loss_dice",
    "loss_contrastive",
    "loss_aux",
    "val_miou",
    "val_mdice",
    "val_pixel_accuracy",
    "seconds",
)
CURVES = (
    ("loss", "train loss"),
    ("val_miou", "val mIoU"),
    ("val_mdice", "val mean Dice"),
    ("val_pixel_accuracy", "val pixel accuracy"),
)
LOGGED = ("loss", "loss_ce", "loss_dice", "loss_contrastive", "loss_aux")


@dataclass
class LossWindow:
    """The sums of the losses since metrics.csv's last train row; checkpoints carry it, so that a resumed run's
    rows average the same iterations as an uninterrupted run's."""

    count: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def take(self) -> dict[str, float]:
        """The averages of the logged losses; the window starts again empty."""
        averaged = {k: v / self.count for k, v in self.sums.items() if k in LOGGED}
        self.count, self.sums = 0, {}
        return averaged

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sums": dict(self.sums)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any] | None) -> LossWindow:
        """The window of a checkpoint (empty for checkpoints written before windows were saved)."""
        if not saved:
            return cls()
        return cls(int(saved["count"]), {str(k): float(v) for k, v in saved["sums"].items()})


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a `metrics.csv`, empty cells dropped, values as floats."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


class RunLog:
    """Appends rows to RUN/metrics.csv and mirrors them to TensorBoard.

    On resume the CSV is first rewritten without the rows after the checkpoint's iteration.
    """

    def __init__(self, run: Path, resume_from: int | None = None) -> None:
        self.run = run
        self.csv = run / "metrics.csv"
        rows = read_metrics(self.csv) if resume_from is not None else []
        self.rows = [r for r in rows if resume_from is not None and r["iteration"] <= resume_from]
        self._flush()
        self.tensorboard = _tensorboard_writer(run / "tensorboard", resume_from)

    def add(self, row: dict[str, Any]) -> None:
        """Record one row (keys from `COLUMNS`)."""
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown metrics columns {sorted(unknown)}")
        clean = {k: float(v) for k, v in row.items()}
        self.rows.append(clean)
        with self.csv.open("a", newline="") as handle:
            handle.write(_format(clean))
        if self.tensorboard is not None:
            step = int(row["iteration"])
            for key, value in row.items():
                if key not in ("iteration", "epoch"):
                    group = "val" if key.startswith("val_") else "train"
                    self.tensorboard.add_scalar(f"{group}/{key.removeprefix('val_')}", float(value), step)
            self.tensorboard.flush()

    def _flush(self) -> None:
        text = ",".join(COLUMNS) + "\n" + "".join(_format(row) for row in self.rows)
        write_bytes(self.csv, text.encode())

    def plot(self) -> Path:
        """Write RUN/curves.png from the rows so far."""
        return plot_curves(self.rows, self.run / "curves.png")

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def plot_curves(rows: list[dict[str, float]], out: Path) -> Path:
    """A 2x2 figure of train loss and val mIoU / Dice / pixel accuracy against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 7), layout="constrained")
    for axis, (key, title) in zip(figure.subplots(2, 2).flat, CURVES, strict=True):
        points = [(r["iteration"], r[key]) for r in rows if key in r]
        if points:
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, marker="o" if key.startswith("val_") else None, markersize=3)
        axis.set_title(title)
        axis.set_xlabel("iteration")
        axis.grid(alpha=0.3)
        if key.startswith("val_"):
            axis.set_ylim(0.0, 1.0)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes(out, buffer.getvalue())
    return out


def _format(row: dict[str, float]) -> str:
    cells = [
        "" if key not in row else str(int(row[key])) if key in ("iteration", "epoch") else f"{row[key]:.6g}"
        for key in COLUMNS
    ]
    return ",".join(cells) + "\n"


def _tensorboard_writer(folder: Path, resume_from: int | None) -> Any:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(folder))
    if resume_from is not None:
        writer.add_text("run", f"resumed after iteration {resume_from}", resume_from)
    return writer
