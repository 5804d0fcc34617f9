"""Regions as polygons: exact at epsilon 0 (filled back by an independent even-odd rasteriser), 8-connected
regions with 4-connected holes, pixel-corner coordinates, orientation, min_area and simplification."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.results.raster import fill_region, fill_rings
from runtime.results.regions import Region, class_binary, class_regions, find_regions


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(float), ring[:, 1].astype(float)
    return float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) / 2)


def _check_exact(mask: np.ndarray, num_classes: int, min_area: int = 1) -> list[Region]:
    """Every class's regions fill back to its pixels (minus regions under `min_area`), disjointly; areas, boxes
    and orientation agree with the fill."""
    regions = find_regions(mask, num_classes, min_area=min_area)
    for class_id in range(num_classes):
        covered = np.zeros(mask.shape, bool)
        for region in (r for r in regions if r.class_id == class_id):
            filled = fill_region(region, mask.shape)
            assert not (covered & filled).any(), "two regions share a pixel"
            covered |= filled
            assert filled.sum() == region.area >= min_area
            rows, cols = np.nonzero(filled)
            x, y = cols.min(), rows.min()
            assert region.bbox == (x, y, cols.max() + 1 - x, rows.max() + 1 - y)
            assert _signed_area(region.outer) > 0
            assert all(_signed_area(hole) < 0 for hole in region.holes)
            assert region.outer.dtype == np.int32
        expected = mask == class_id
        if min_area == 1:
            assert (covered == expected).all(), f"class {class_id} not filled back exactly"
        else:
            assert not (covered & ~expected).any()
    return regions


def _parse(rows: list[str]) -> np.ndarray:
    return np.array([[int(c) for c in row] for row in rows], np.uint8)


def test_a_rectangle_is_four_corner_vertices_in_pixel_corner_coordinates() -> None:
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 1:4] = 1  # pixels x 1..3, y 2..3
    (region,) = find_regions(mask, 2)[1:]
    assert region.class_id == 1 and region.area == 6 and region.bbox == (1, 2, 3, 2)
    assert sorted(map(tuple, region.outer.tolist())) == [(1, 2), (1, 4), (4, 2), (4, 4)]
    assert _signed_area(region.outer) == 6 and region.holes == ()
    assert region.as_dict() == {"area": 6, "bbox": [1, 2, 3, 2], "outer": region.outer.tolist(), "holes": []}


def test_holes_islands_in_holes_and_touching_classes_are_exact() -> None:
    mask = _parse([
        "1111111111",
        "1000000001",
        "1022222201",
        "1020110201",
        "1020110201",
        "1022222201",
        "1000000001",
        "1111111111",
    ])
    regions = _check_exact(mask, 3)
    ones = [r for r in regions if r.class_id == 1]
    assert [r.area for r in ones] == [32, 4]  # the frame ring, then the island inside the 2-ring's hole
    assert len(ones[0].holes) == 1 and len(ones[1].holes) == 0
    (two,) = [r for r in regions if r.class_id == 2]
    assert len(two.holes) == 1 and _signed_area(two.holes[0]) == -8


def test_regions_on_the_frame_border_and_single_pixels() -> None:
    mask = np.zeros((5, 7), np.uint8)
    mask[0, 0] = mask[4, 6] = mask[2, 3] = 1  # corners of the frame and a lone pixel
    mask[:, 6] = 2
    mask[4, 6] = 1
    regions = _check_exact(mask, 3)
    corner = next(r for r in regions if r.class_id == 1 and r.bbox == (6, 4, 1, 1))
    assert sorted(map(tuple, corner.outer.tolist())) == [(6, 4), (6, 5), (7, 4), (7, 5)]
    assert len([r for r in regions if r.class_id == 1]) == 3


def test_pixels_touching_at_a_corner_are_one_region_and_a_diagonal_gap_closes_a_hole() -> None:
    diagonal = np.eye(6, dtype=np.uint8)
    (line,) = find_regions(diagonal, 2)[1:]
    assert line.area == 6 and line.holes == ()
    _check_exact(diagonal, 2)
    checker = (np.indices((6, 6)).sum(axis=0) % 2).astype(np.uint8)
    regions = _check_exact(checker, 2)
    assert [r.area for r in regions if r.class_id == 1] == [18]  # one 8-connected region
    assert len([r for r in regions if r.class_id == 0]) == 1
    # a ring of 1s closed only at corners: the 0 inside is a hole (4-connected holes)
    diamond = _parse(["00100", "01010", "10001", "01010", "00100"])
    regions = _check_exact(diamond, 2)
    (ring,) = [r for r in regions if r.class_id == 1]
    assert ring.area == 8 and len(ring.holes) == 1 and _signed_area(ring.holes[0]) == -5


def test_pinches_and_holes_touching_the_outside_at_a_corner() -> None:
    mask = _parse([
        "0000000",
        "0111100",
        "0100110",
        "0100010",
        "0111100",
        "0000001",
    ])
    _check_exact(mask, 2)
    _check_exact(_parse(["110", "101", "011"]), 2)
    _check_exact(_parse(["1010", "0101", "1010"]), 2)


def test_random_masks_fill_back_exactly() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        height, width = (int(v) for v in rng.integers(1, 16, 2))
        classes = int(rng.integers(1, 5))
        mask = rng.integers(0, classes, (height, width)).astype(np.uint8)
        if rng.random() < 0.5:  # blobs rather than noise
            mask = np.repeat(np.repeat(mask[: height // 2 + 1, : width // 2 + 1], 2, 0), 2, 1)[:height, :width]
        _check_exact(np.ascontiguousarray(mask), classes)


def test_ids_outside_the_classes_have_no_regions_and_wide_integer_masks_work() -> None:
    mask = np.full((4, 4), 255, np.uint8)
    mask[1:3, 1:3] = 0
    regions = find_regions(mask, 2)
    assert [(r.class_id, r.area) for r in regions] == [(0, 4)]
    wide = mask.astype(np.int32)
    assert [(r.class_id, r.area, r.bbox) for r in find_regions(wide, 2)] == [(0, 4, (1, 1, 2, 2))]


def test_min_area_drops_specks_and_keeps_the_rest_exact() -> None:
    mask = np.zeros((12, 12), np.uint8)
    mask[1:8, 1:8] = 1
    mask[3:6, 3:6] = 0
    mask[4, 4] = 1  # a 1-pixel island in the hole
    mask[10, 10] = 1
    regions = _check_exact(mask, 2, min_area=2)
    ones = [r for r in regions if r.class_id == 1]
    assert [r.area for r in ones] == [40]
    assert fill_region(ones[0], mask.shape)[4, 4] == 0  # the island is gone, the hole stays a hole


def test_largest_first_within_a_class() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[0, 0] = 1
    mask[5:9, 5:9] = 1
    mask[0:2, 6:9] = 1
    assert [r.area for r in find_regions(mask, 2) if r.class_id == 1] == [16, 6, 1]


def test_epsilon_simplifies_within_its_distance_and_keeps_area_and_box_exact() -> None:
    yy, xx = np.mgrid[:80, :80]
    disc = (((xx - 40) ** 2 + (yy - 40) ** 2) < 30**2).astype(np.uint8)
    exact = class_regions(class_binary(disc, 1), 1)[0]
    simple = class_regions(class_binary(disc, 1), 1, epsilon=1.5)[0]
    assert len(simple.outer) < len(exact.outer) / 3
    assert (simple.area, simple.bbox) == (exact.area, exact.bbox)
    vertices = {tuple(v) for v in exact.outer.tolist()}
    assert all(tuple(v) in vertices for v in simple.outer.tolist())  # a subset of the exact ring's vertices
    filled = fill_region(simple, disc.shape)
    assert (filled != disc.astype(bool)).sum() < 0.03 * disc.sum()
    tiny = class_regions(class_binary(np.ones((1, 1), np.uint8), 1), 1, epsilon=5)[0]
    assert len(tiny.outer) >= 3


@pytest.mark.parametrize("bad", [{"epsilon": -1.0}, {"epsilon": float("nan")}, {"min_area": 0}, {"min_area": 1.5}])
def test_bad_options_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="epsilon|min area"):
        find_regions(np.zeros((2, 2), np.uint8), 1, **bad)  # type: ignore[arg-type]


def test_the_rasteriser_fills_by_pixel_centres() -> None:
    square = np.array([[1, 1], [3, 1], [3, 2], [1, 2]])
    assert fill_rings([square], (3, 4)).tolist() == [
        [False, False, False, False],
        [False, True, True, False],
        [False, False, False, False],
    ]
    triangle = [[0, 0], [4, 0], [0, 4]]  # centres on the diagonal x + y = 4 are right of the left edge only
    yy, xx = np.mgrid[:4, :4]
    assert (fill_rings([triangle], (4, 4)) == (xx + yy + 1 <= 4)).all()
    with_hole = [np.array([[0, 0], [3, 0], [3, 3], [0, 3]]), np.array([[1, 1], [1, 2], [2, 2], [2, 1]])]
    assert fill_rings(with_hole, (3, 3)).sum() == 8 and not fill_rings(with_hole, (3, 3))[1, 1]
