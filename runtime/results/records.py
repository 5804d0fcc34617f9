"""The per-frame record: one JSON line per frame and stream (`--emit`), one per image for `segment`.

    {"source": "street.mp4", "stream": "street", "frame": 42, "time": 2.8, "wall_time": 1767800000.123,
     "size": [512, 1024], "shares": {"road": 0.412, "sidewalk": 0.051, ...},
     "regions": {"road": [{"area": 210944, "bbox": [0, 240, 1024, 272],
                           "outer": [[0, 240], [1024, 240], ...], "holes": [[[500, 300], ...]]}], ...},
     "drift": {"js": 0.02, "low_share": 0.11, "low_excess": 0.0, "score": 0.02, "alerting": false}}

- `frame`: the frame's index in its stream (0-based); `time`: its stream time in seconds (position in a file,
  time since the start for a live source); `wall_time`: Unix time (UTC seconds) the record was made.
- `size`: the frame's `[height, width]`, the space of every coordinate (see `runtime.results.regions`).
- `shares`: every class of the model, absent ones 0.0 (`runtime.results.shares`).
- `regions`: the classes that have regions, largest region first: polygons (`outer`, `holes`) or, with
  `regions="rle"`, COCO RLE (`rle`: `{"size", "counts"}`); absent with `regions="none"`.
- `drift`: only where the model has a reference and the stream is monitored (`runtime.results.drift`).

In Python, `frame_record` holds each ring as an `N x 2` int array (making 30,000 small lists a frame cost more than
finding the regions); `line(record)` is its JSON line, `plain(record)` the record as that line reads back.
"""

from __future__ import annotations

import json
import time as clock
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from runtime.results.defaults import REGION_MODES
from runtime.results.drift import DriftReading
from runtime.results.regions import check_region_options, class_binary, find_regions
from runtime.results.rle import rle_regions
from runtime.results.shares import class_counts, shares_dict


@dataclass(frozen=True)
class ResultOptions:
    """What a record holds: `regions` (`polygon`, `rle` or `none`), `min_area` (pixels; smaller regions are
    dropped), `epsilon` (polygon simplification in pixels, 0 exact) and `every` (a record for every N-th frame
    of a stream). Invalid values raise ValueError (one line)."""

    regions: str = "polygon"
    min_area: int = 1
    epsilon: float = 0.0
    every: int = 1

    def __post_init__(self) -> None:
        if self.regions not in REGION_MODES:
            raise ValueError(f"regions '{self.regions}': choose from {', '.join(REGION_MODES)}")
        check_region_options(self.min_area, self.epsilon)
        if int(self.every) != self.every or self.every < 1:
            raise ValueError(f"every {self.every}: a record every N frames needs a whole N >= 1")

    def due(self, frame: int) -> bool:
        """Whether the `frame`-th frame a stream processed (0-based) gets a record: 0, N, 2N, ... (a file's frames
        by position; a live source's by the frames it processed, so that dropped frames do not thin the records)."""
        return frame % self.every == 0


def frame_record(
    mask: np.ndarray,
    classes: Sequence[str],
    *,
    source: str,
    stream: str,
    frame: int,
    time: float,
    wall_time: float | None = None,
    options: ResultOptions | None = None,
    drift: DriftReading | None = None,
) -> dict[str, Any]:
    """The record of one frame's `H x W` mask of class ids (see the module for the fields)."""
    options = options or ResultOptions()
    counts = class_counts(mask, len(classes))
    record: dict[str, Any] = {
        "source": source,
        "stream": stream,
        "frame": int(frame),
        "time": round(float(time), 6),
        "wall_time": round(clock.time() if wall_time is None else wall_time, 6),
        "size": [int(mask.shape[0]), int(mask.shape[1])],
        "shares": shares_dict(counts / max(mask.size, 1), classes),
    }
    if options.regions != "none":
        grouped: dict[str, list[dict[str, Any]]] = {}
        for region in _regions(mask, len(classes), counts, options):
            grouped.setdefault(classes[region.class_id], []).append(region.as_dict(lists=False))
        record["regions"] = grouped
    if drift is not None:
        record["drift"] = drift.as_dict()
    return record


def line(record: dict[str, Any]) -> bytes:
    """`record` as its JSON line: compact UTF-8, keys in the record's order, numpy arrays and scalars as JSON
    lists and numbers, a newline at the end."""
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)


def plain(record: dict[str, Any]) -> dict[str, Any]:
    """`record` as its JSON line reads back (rings as lists of `[x, y]`, numpy numbers as Python ones)."""
    return dict(json.loads(line(record)))


def _regions(mask: np.ndarray, num_classes: int, counts: np.ndarray, options: ResultOptions) -> list[Any]:
    if options.regions == "polygon":
        return find_regions(mask, num_classes, min_area=options.min_area, epsilon=options.epsilon, counts=counts)
    regions = []
    for class_id in np.flatnonzero(counts >= options.min_area):
        regions.extend(rle_regions(class_binary(mask, int(class_id)), int(class_id), options.min_area))
    return regions
