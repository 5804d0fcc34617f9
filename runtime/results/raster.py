"""Polygons back to masks: even-odd filling at pixel centres, written independently of `regions`' tracing.

Pixel (x, y) is inside when the rings cross its scanline (y + 0.5) an odd number of times strictly left of
its centre (x + 0.5). Rings on integer pixel corners (`regions` at epsilon 0) never pass through a centre,
so the fill of a region's outer ring and holes is exactly its pixels. Other rings follow the same rule: an
edge is on a scanline from its lower y (included) to its upper y (excluded), and a crossing exactly at a
centre is not left of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from runtime.results.regions import Region


def fill_rings(rings: Iterable[np.ndarray | Sequence[Sequence[float]]], shape: tuple[int, int]) -> np.ndarray:
    """`H x W` bool: the pixels inside an odd number of `rings` (each `N x 2` x, y vertices, open or closed)."""
    height, width = shape
    toggles = np.zeros((height, width + 1), np.uint8)
    for ring in rings:
        start = np.asarray(ring, np.float64).reshape(-1, 2)
        end = np.roll(start, -1, axis=0)
        low, high = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
        first = np.clip(np.ceil(low - 0.5), 0, height).astype(np.int64)  # rows whose centre line y + 0.5
        stop = np.clip(np.ceil(high - 0.5), 0, height).astype(np.int64)  # lies in [low, high)
        rows_per_edge = np.maximum(stop - first, 0)
        edge = np.repeat(np.arange(len(start)), rows_per_edge)
        rows = first[edge] + np.arange(len(edge)) - np.repeat(np.cumsum(rows_per_edge) - rows_per_edge, rows_per_edge)
        (x0, y0), (x1, y1) = start[edge].T, end[edge].T
        crossing = x0 + (rows + 0.5 - y0) * (x1 - x0) / (y1 - y0)
        columns = np.clip(np.floor(crossing - 0.5).astype(np.int64) + 1, 0, width)  # first centre right of it
        np.bitwise_xor.at(toggles, (rows, columns), 1)
    return np.bitwise_xor.accumulate(toggles, axis=1)[:, :width].astype(bool)


def fill_region(region: Region, shape: tuple[int, int]) -> np.ndarray:
    """`H x W` bool mask of a polygon region (its outer ring and holes)."""
    if region.outer is None:
        raise ValueError("the region has no polygon (an RLE region decodes with pycocotools.mask.decode)")
    return fill_rings([region.outer, *region.holes], shape)
