"""COCO run-length encoding: `{"size": [H, W], "counts": "<string>"}`, what `pycocotools.mask.decode` reads.

Counts are the lengths of alternating runs of 0s and 1s over the pixels in column-major order (down the
first column, then the next), starting with 0s (a first run of length 0 when the first pixel is set), the
last run included. The string is pycocotools' compressed form (`rleToString`): each count, minus the count
two before it from the fourth on, in 5-bit groups, low first, a continuation bit 0x20, plus 48.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from runtime.results.regions import Region


def encode(binary: np.ndarray) -> dict[str, Any]:
    """COCO RLE of the non-zero pixels of an `H x W` mask."""
    height, width = binary.shape
    flat = np.asarray(binary, bool).ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    if flat.size and flat[0]:
        bounds = np.concatenate([[0], bounds])
    return {"size": [height, width], "counts": counts_string(np.diff(bounds))}


def counts_string(counts: np.ndarray) -> str:
    """pycocotools' compressed string of uncompressed RLE `counts` (`rleToString`)."""
    return counts_strings(np.asarray(counts), np.array([len(counts)]))[0] if len(counts) else ""


def counts_strings(counts: np.ndarray, lengths: np.ndarray) -> list[str]:
    """`counts_string` of many RLEs at once, vectorised: their counts concatenated, `lengths` counts each (>= 1)."""
    counts = np.asarray(counts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    starts = np.cumsum(lengths) - lengths
    values = counts.copy()
    later = np.flatnonzero(np.arange(len(counts)) - np.repeat(starts, lengths) >= 3)
    values[later] -= counts[later - 2]  # from an RLE's fourth count on, the difference to the count two before
    groups, emitted = [], []
    going = np.ones(len(values), bool)
    while going.any():
        chunk = values & 0x1F
        values = values >> 5  # arithmetic: negative deltas end at -1
        more = np.where(chunk & 0x10, values != -1, values != 0)
        groups.append((chunk | (more << 5)) + 48)
        emitted.append(going)
        going = going & more
    chars = np.stack(groups, axis=1).astype(np.uint8)
    taken = np.stack(emitted, axis=1)
    text = chars[taken].tobytes().decode("ascii")
    ends = np.cumsum(np.add.reduceat(taken.sum(axis=1), starts)).tolist()
    return [text[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def rle_regions(binary: np.ndarray, class_id: int, min_area: int = 1) -> list[Region]:
    """The 8-connected components of the non-zero pixels of `binary` (`H x W` uint8) as RLE regions, largest
    first; components under `min_area` pixels are dropped. Same components, areas and boxes as
    `regions.class_regions`, with `rle` instead of rings."""
    height, width = binary.shape
    x0, y0, w, h = cv2.boundingRect(binary)
    if w == 0 or h == 0:
        return []
    # labelled transposed, so that the labels come out in column-major order (the transpose of uint8 is cheaper)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(binary[y0 : y0 + h, x0 : x0 + w].T), connectivity=8, ltype=cv2.CV_32S
    )
    chosen = stats[:, cv2.CC_STAT_AREA] >= min_area
    chosen[0] = False  # the background
    if not chosen.any():
        return []
    starts, ends, owners = _runs(labels, (x0, y0), height)
    select = chosen[owners]
    order = np.argsort(owners[select], kind="stable")  # by component, each in pixel order
    starts, ends, owners = starts[select][order], ends[select][order], owners[select][order]
    first = np.flatnonzero(np.diff(owners, prepend=-1))
    runs = np.diff(np.append(first, len(owners)))
    # per component: boundaries 0, s1, e1, s2, e2, ..., total -> counts; a last count of 0 is dropped
    size = 2 * runs + 2
    offset = np.cumsum(size) - size
    bounds = np.empty(int(size.sum()), np.int64)
    bounds[offset] = 0
    bounds[offset + size - 1] = height * width
    inner = np.repeat(offset + 1 - 2 * first, 2 * runs) + np.arange(2 * len(owners))
    bounds[inner] = np.stack([starts, ends], axis=1).ravel()
    counts = np.diff(bounds)
    keep = np.ones(len(counts), bool)
    keep[offset[1:] - 1] = False  # the step from one component's total to the next one's 0
    last = offset + size - 2
    empty_tail = counts[last] == 0
    keep[last[empty_tail]] = False
    strings = counts_strings(counts[keep], size - 1 - empty_tail)
    component = owners[first].tolist()
    rle = dict(zip(component, strings, strict=True))
    regions = []
    for k in sorted(component, key=lambda k: (-stats[k, cv2.CC_STAT_AREA], stats[k, 0], stats[k, 1])):
        top, left, rows, columns, area = (int(v) for v in stats[k])  # transposed: x and y swapped
        regions.append(
            Region(
                class_id=class_id,
                area=area,
                bbox=(x0 + left, y0 + top, columns, rows),
                rle={"size": [height, width], "counts": rle[k]},
            )
        )
    return regions


def _runs(labels: np.ndarray, offset: tuple[int, int], height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of one label in column-major order over the whole frame: start and end (flat indices in
    the frame) and label of each, for the transposed labels (`columns x rows`) of a crop at `offset` (x, y)
    of a frame `height` rows high."""
    rows = labels.shape[1]
    flat = labels.ravel()
    change = np.ones(flat.size, bool)
    change[1:] = flat[1:] != flat[:-1]
    change[::rows] = True  # a crop's column starts a run (the frame has rows above and below it)
    begin = np.flatnonzero(change)
    end = np.append(begin[1:], flat.size)
    owners = flat[begin]
    set_ = owners > 0
    begin, end, owners = begin[set_], end[set_], owners[set_]
    column, row = np.divmod(begin, rows)
    starts = (offset[0] + column) * height + offset[1] + row
    ends = starts + (end - begin)
    joined = np.zeros(len(starts), bool)  # a run at a column's foot continued at the next column's head
    joined[1:] = (starts[1:] == ends[:-1]) & (owners[1:] == owners[:-1])
    if joined.any():
        keep_end = np.append(~joined[1:], True)
        starts, ends, owners = starts[~joined], ends[keep_end], owners[~joined]
    return starts, ends, owners
