"""Per-class regions: the connected components of a mask as polygons with holes, exact at the pixel boundary.

Conventions (what a consumer needs to read the polygons right):
- **Pixel corners.** Pixel (x, y) is the square [x, x+1] x [y, y+1]; a W x H frame spans [0, W] x [0, H].
  Vertices are integers (after simplification too: it keeps a subset of them).
- **8-connected regions, 4-connected holes.** A region is an 8-connected component of one class: pixels
  touching at a corner belong together (a thin diagonal pole is one region, not a row of 1-pixel specks that
  `min_area` would drop). Its holes are the 4-connected components of other pixels it encloses (the pair
  that makes boundaries well defined). A region of the same class inside a hole is a region of its own.
- **Crack boundaries.** Ring edges run along pixel sides, between the region's pixels and the rest. Filling
  the outer ring and the holes even-odd at pixel centres gives the region's pixels back exactly
  (`runtime.results.raster`). Where a region's pixels (or a hole's) meet only at a corner, rings pass that
  corner twice: rings may touch themselves and each other at corners, never cross or share an edge.
  (OGC validity forbids a ring touching itself; `shapely.make_valid` splits such a ring at that corner.)
- **Orientation.** Outer rings have a positive signed area (shoelace over the listed x, y), holes a negative
  one: RFC 7946's rule on the numbers (with y down, as in images, an outer ring runs clockwise on screen).
  Rings are open (the first vertex is not repeated).
- **Simplification.** `epsilon` > 0 simplifies each ring by Douglas-Peucker (`cv2.approxPolyDP`: no vertex
  of the exact ring farther than `epsilon` pixels from the result); a ring that would keep fewer than 3
  vertices stays exact. Simplified rings may cross; `area` and `bbox` always describe the exact pixels.

How: a class's pixels (cropped to their box) are drawn into a grid of twice the resolution plus one in
which each pixel is a closed 3 x 3 block (centre, 4 side midpoints, 4 corners), so that 8-connected pixels
make connected blocks and the holes stay 4-connected. OpenCV's border following (`findContours`,
RETR_CCOMP: outer borders and their holes) then visits the corners and side midpoints of the crack
boundary, except that its diagonal steps cut the concave corners; each cut corner is put back (of the two
candidates, the one on the corner lattice), side midpoints and vertices on straight runs are dropped, and the
grid coordinates are halved. All rings of a class are processed together, vectorised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from runtime.results.shares import class_counts

_CLOSURE = np.ones((3, 3), np.uint8)


@dataclass(frozen=True, eq=False)
class Region:
    """One connected component of one class.

    `area`: its pixels; `bbox`: `(x, y, width, height)` in pixels (COCO's box: the top-left corner of the
    top-left pixel, then the number of columns and rows). Either `outer` (`N x 2` int32 ring) and `holes`,
    or `rle` (COCO RLE of the region over the whole frame, `runtime.results.rle`).
    """

    class_id: int
    area: int
    bbox: tuple[int, int, int, int]
    outer: np.ndarray | None = None
    holes: tuple[np.ndarray, ...] = ()
    rle: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: `area`, `bbox`, and `outer` + `holes` (lists of `[x, y]`) or `rle`."""
        out: dict[str, Any] = {"area": self.area, "bbox": list(self.bbox)}
        if self.rle is not None:
            out["rle"] = self.rle
        elif self.outer is not None:
            out["outer"] = self.outer.tolist()
            out["holes"] = [hole.tolist() for hole in self.holes]
        return out


def check_region_options(min_area: int, epsilon: float) -> None:
    """Refuse `min_area` < 1 and a negative or non-finite `epsilon` (ValueError, one line)."""
    if int(min_area) != min_area or min_area < 1:
        raise ValueError(f"min area {min_area} must be a whole number of pixels, at least 1")
    if not np.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon {epsilon:g} must be 0 (exact pixel boundary) or a positive number of pixels")


def find_regions(
    mask: np.ndarray,
    num_classes: int,
    *,
    min_area: int = 1,
    epsilon: float = 0.0,
    counts: np.ndarray | None = None,
) -> list[Region]:
    """The regions of every class `0 .. num_classes - 1` in `mask` (other ids are no class), by class id, then
    largest first; regions smaller than `min_area` pixels are dropped. `counts`: the mask's
    `class_counts` when the caller has them (classes with fewer than `min_area` pixels are skipped)."""
    check_region_options(min_area, epsilon)
    counts = class_counts(mask, num_classes) if counts is None else counts
    regions: list[Region] = []
    for class_id in np.flatnonzero(np.asarray(counts) >= min_area):
        regions.extend(class_regions(class_binary(mask, int(class_id)), int(class_id), min_area, epsilon))
    return regions


def class_binary(mask: np.ndarray, class_id: int) -> np.ndarray:
    """`H x W` uint8, 1 where `mask` is `class_id`, else 0."""
    return np.equal(mask, class_id).view(np.uint8)


def class_regions(binary: np.ndarray, class_id: int, min_area: int = 1, epsilon: float = 0.0) -> list[Region]:
    """The regions of the non-zero pixels of `binary` (`H x W` uint8), largest first (see the module)."""
    x0, y0, w, h = cv2.boundingRect(binary)
    if w == 0 or h == 0:
        return []
    grid = np.zeros((2 * h + 3, 2 * w + 3), np.uint8)
    grid[2:-1:2, 2:-1:2] = binary[y0 : y0 + h, x0 : x0 + w]
    contours, hierarchy = cv2.findContours(cv2.dilate(grid, _CLOSURE), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    points, lengths = crack_rings(contours)
    points += (x0, y0)
    starts = np.cumsum(lengths) - lengths
    signed = _signed_areas(points, lengths)
    parents = np.asarray(hierarchy, np.int64).reshape(-1, 4)[:, 3]
    holes = np.flatnonzero(parents >= 0)
    enclosed = np.zeros(len(lengths), np.int64)
    np.add.at(enclosed, parents[holes], np.abs(signed[holes]))
    areas = np.abs(signed) - enclosed
    low = np.stack([np.minimum.reduceat(points[:, i], starts) for i in (0, 1)], axis=1)
    high = np.stack([np.maximum.reduceat(points[:, i], starts) for i in (0, 1)], axis=1)
    outers = [int(k) for k in np.flatnonzero(parents < 0) if areas[k] >= min_area]
    outers.sort(key=lambda k: (-areas[k], low[k, 1], low[k, 0]))
    children: dict[int, list[int]] = {}
    for k in holes:
        children.setdefault(int(parents[k]), []).append(int(k))
    rings = np.split(points.astype(np.int32), starts[1:])

    def ring(k: int, sign: int) -> np.ndarray:
        exact = rings[k] if signed[k] * sign > 0 else rings[k][::-1]
        return simplify(exact, epsilon)

    return [
        Region(
            class_id=class_id,
            area=int(areas[k]),
            bbox=(int(low[k, 0]), int(low[k, 1]), int(high[k, 0] - low[k, 0]), int(high[k, 1] - low[k, 1])),
            outer=ring(k, 1),
            holes=tuple(ring(j, -1) for j in children.get(k, [])),
        )
        for k in outers
    ]


def crack_rings(contours: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV contours traced on the closed-block grid -> crack rings in pixel-corner coordinates (relative
    to the grid's crop): all vertices concatenated (`M x 2` int64) and the vertex count of each ring."""
    lengths = np.fromiter((len(c) for c in contours), np.int64, len(contours))
    grid = np.concatenate(contours).reshape(-1, 2).astype(np.int64) - 1  # corner (x, y) sits at grid (2x, 2y)
    step = grid[_following(lengths)] - grid
    cut = (step[:, 0] != 0) & (step[:, 1] != 0)  # a diagonal step between two side midpoints skips a corner
    along_x = grid + step * (1, 0)
    on_corner = ((along_x[:, 0] | along_x[:, 1]) & 1) == 0
    corner = np.where(on_corner[:, None], along_x, grid + step * (0, 1))
    emitted = 1 + cut.astype(np.int64)
    at = np.cumsum(emitted) - emitted
    path = np.empty((int(emitted.sum()), 2), np.int64)
    path[at] = grid
    path[at[cut] + 1] = corner[cut]
    path_lengths = np.add.reduceat(emitted, np.cumsum(lengths) - lengths)
    before, after = path[_preceding(path_lengths)], path[_following(path_lengths)]
    straight = ((before == path) & (after == path)).any(axis=1)
    keep = ~straight
    ring_lengths = np.add.reduceat(keep.astype(np.int64), np.cumsum(path_lengths) - path_lengths)
    return path[keep] // 2, ring_lengths


def simplify(ring: np.ndarray, epsilon: float) -> np.ndarray:
    """`ring` simplified by Douglas-Peucker within `epsilon` pixels (0: unchanged); never below 3 vertices."""
    if epsilon == 0 or len(ring) <= 3:
        return ring
    fewer = cv2.approxPolyDP(ring.reshape(-1, 1, 2), float(epsilon), True).reshape(-1, 2)
    return fewer if len(fewer) >= 3 else ring


def _following(lengths: np.ndarray) -> np.ndarray:
    """Index of each vertex's successor in its ring (rings concatenated, `lengths` vertices each)."""
    ends = np.cumsum(lengths)
    index = np.arange(1, int(ends[-1]) + 1) if len(ends) else np.zeros(0, np.int64)
    index[ends - 1] = ends - lengths
    return index


def _preceding(lengths: np.ndarray) -> np.ndarray:
    """Index of each vertex's predecessor in its ring."""
    ends = np.cumsum(lengths)
    index = np.arange(-1, int(ends[-1]) - 1) if len(ends) else np.zeros(0, np.int64)
    index[ends - lengths] = ends - 1
    return index


def _signed_areas(points: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Shoelace area of each ring (int64; rings of integer vertices with axis-parallel edges have whole areas)."""
    x, y = points[:, 0], points[:, 1]
    following = _following(lengths)
    cross = x * y[following] - x[following] * y
    return np.add.reduceat(cross, np.cumsum(lengths) - lengths) // 2
