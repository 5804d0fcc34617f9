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

How: OpenCV's border following (`findContours`, RETR_CCOMP: outer borders and their holes; Suzuki's
8-connected objects with 4-connected holes) lists each border's pixels in order, at the mask's own resolution.
At each border pixel the follower swept, from the pixel it came from to the one it goes to, over neighbours
outside the region; the sides of the pixel facing the swept side neighbours are the crack edges the ring runs
along there, in that order. A table from (incoming, outgoing) step to those sides' end corners turns every
border into its crack ring at once (a 1-pixel border gets its four corners); vertices on straight runs are
dropped. All rings of a class are processed together, vectorised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from runtime.results.shares import class_counts

STEPS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))  # clockwise on screen (y down)
SIDE_END = {0: (1, 0), 6: (0, 0), 4: (0, 1), 2: (1, 1)}  # a side's end corner, the ring going counter-clockwise
ALONE = 8  # the step code of a 1-pixel border (no step): all four sides


def _side_table() -> tuple[np.ndarray, np.ndarray]:
    """For each (back, out) pair of step codes (`back`: towards the previous border pixel, `out`: towards the next;
    `ALONE` for neither), the corners (relative to the pixel's top-left) the ring passes: the end corner of each
    side facing a neighbour swept counter-clockwise from `back` (exclusive) to `out` (exclusive; all the way
    round when they are equal). Returns the count per pair (`9 x 9`) and the corners (`9 x 9 x 4 x 2`)."""
    counts = np.zeros((9, 9), np.int64)
    corners = np.zeros((9, 9, 4, 2), np.int64)
    for back in range(9):
        for out in range(9):
            if back == ALONE or out == ALONE:
                sides = [6, 4, 2, 0] if back == out == ALONE else []
            else:
                swept = [(back - k) % 8 for k in range(1, 8)]
                sides = [k for k in (swept[: swept.index(out)] if out != back else swept) if k % 2 == 0]
            counts[back, out] = len(sides)
            for n, side in enumerate(sides):
                corners[back, out, n] = SIDE_END[side]
    return counts, corners


_SIDE_COUNTS, _SIDE_CORNERS = _side_table()
_STEP_CODE = np.full(9, ALONE, np.int64)  # dx * 3 + dy + 4 -> step code
for _code, (_dx, _dy) in enumerate(STEPS):
    _STEP_CODE[_dx * 3 + _dy + 4] = _code
_REVERSED = np.array([*((np.arange(8) + 4) % 8), ALONE])  # a step code -> the opposite step's


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

    def as_dict(self, lists: bool = True) -> dict[str, Any]:
        """`area`, `bbox`, and `outer` + `holes` (lists of `[x, y]`) or `rle`. `lists=False`: the rings as
        C-contiguous `N x 2` arrays instead (what `runtime.results.emit` writes without making lists)."""
        out: dict[str, Any] = {"area": self.area, "bbox": list(self.bbox)}
        if self.rle is not None:
            out["rle"] = self.rle
        elif self.outer is not None:
            ring = _as_list if lists else np.ascontiguousarray
            out["outer"] = ring(self.outer)
            out["holes"] = [ring(hole) for hole in self.holes]
        return out


def _as_list(ring: np.ndarray) -> list[list[int]]:
    return ring.tolist()


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
    crop = np.ascontiguousarray(binary[y0 : y0 + h, x0 : x0 + w])
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    points, lengths = crack_rings(contours)
    points += (x0, y0)
    starts = np.cumsum(lengths) - lengths
    signed = _signed_areas(points, lengths)
    parents = np.asarray(hierarchy, np.int64).reshape(-1, 4)[:, 3]
    is_hole = parents >= 0
    holes = np.flatnonzero(is_hole)
    enclosed = np.zeros(len(lengths), np.int64)
    np.add.at(enclosed, parents[holes], np.abs(signed[holes]))
    areas = np.abs(signed) - enclosed
    low = np.stack([np.minimum.reduceat(points[:, i], starts) for i in (0, 1)], axis=1)
    high = np.stack([np.maximum.reduceat(points[:, i], starts) for i in (0, 1)], axis=1)
    outers = np.flatnonzero(~is_hole & (areas >= min_area))
    outers = outers[np.lexsort((low[outers, 0], low[outers, 1], -areas[outers]))]
    points = _oriented(points, lengths, starts, (signed > 0) == is_hole).astype(np.int32)
    ends = (starts + lengths).tolist()
    firsts = starts.tolist()

    def ring(k: int) -> np.ndarray:
        exact = points[firsts[k] : ends[k]]
        return simplify(exact, epsilon) if epsilon else exact

    by_parent = holes[np.argsort(parents[holes], kind="stable")]
    grouped = np.split(by_parent, np.flatnonzero(np.diff(parents[by_parent])) + 1) if len(holes) else []
    children = {int(parents[group[0]]): group.tolist() for group in grouped}
    boxes = np.concatenate([low, high - low], axis=1).tolist()
    area_list = areas.tolist()
    return [
        Region(
            class_id=class_id,
            area=area_list[k],
            bbox=tuple(boxes[k]),
            outer=ring(k),
            holes=tuple(ring(j) for j in children.get(k, ())),
        )
        for k in outers.tolist()
    ]


def _oriented(points: np.ndarray, lengths: np.ndarray, starts: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """`points` with the vertex order of the rings marked in `flip` reversed (each ring stays where it is)."""
    if not flip.any():
        return points
    owner = np.repeat(np.arange(len(lengths)), lengths)
    index = np.arange(len(points))
    mirrored = 2 * starts[owner] + lengths[owner] - 1 - index
    return points[np.where(flip[owner], mirrored, index)]


def crack_rings(contours: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV borders (`findContours`, CHAIN_APPROX_NONE) -> crack rings in pixel-corner coordinates (relative to
    the traced image): all vertices concatenated (`M x 2` int64) and the vertex count of each ring."""
    lengths = np.fromiter((len(c) for c in contours), np.int64, len(contours))
    pixels = np.concatenate(contours).reshape(-1, 2)
    step = pixels[_following(lengths)] - pixels
    out = _STEP_CODE[step[:, 0] * 3 + step[:, 1] + 4]
    pair = _REVERSED[out[_preceding(lengths)]] * 9 + out  # (back, out) of each border pixel
    emitted = _SIDE_COUNTS.ravel()[pair]
    firsts = np.cumsum(emitted) - emitted
    nth = np.arange(int(firsts[-1] + emitted[-1])) - np.repeat(firsts, emitted)
    path = np.repeat(pixels, emitted, axis=0) + _SIDE_CORNERS.reshape(-1, 2)[np.repeat(pair * 4, emitted) + nth]
    path_lengths = np.add.reduceat(emitted, np.cumsum(lengths) - lengths)
    edge = path[_following(path_lengths)] - path  # unit steps along an axis: one code each
    heading = edge[:, 0] + 2 * edge[:, 1]
    turn = heading != heading[_preceding(path_lengths)]  # a vertex where the ring turns; the rest are straight
    ring_lengths = np.add.reduceat(turn.astype(np.int64), np.cumsum(path_lengths) - path_lengths)
    return path[turn].astype(np.int64), ring_lengths


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
