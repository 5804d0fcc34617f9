"""COCO RLE: pycocotools decodes it to the mask bit for bit and writes the same string; per-component RLE
regions have the polygon regions' components, areas and boxes."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco

from runtime.results.regions import class_regions
from runtime.results.rle import counts_string, encode, rle_regions


def _decode(rle: dict[str, object]) -> np.ndarray:
    return coco.decode({"size": rle["size"], "counts": str(rle["counts"]).encode()})


def _coco_string(binary: np.ndarray) -> str:
    return coco.encode(np.asfortranarray(binary.astype(np.uint8)))["counts"].decode()


def test_encode_matches_pycocotools_on_random_and_edge_masks() -> None:
    rng = np.random.default_rng(0)
    masks = [(rng.random(tuple(rng.integers(1, 20, 2))) < rng.random()).astype(np.uint8) for _ in range(200)]
    masks += [np.zeros((3, 5), np.uint8), np.ones((3, 5), np.uint8), np.eye(4, dtype=np.uint8)]
    big = np.zeros((3000, 2500), np.uint8)  # counts of millions: several 5-bit groups, negative deltas
    big[7:2900, 100:2000] = 1
    big[0, 0] = 1
    masks.append(big)
    for mask in masks:
        rle = encode(mask)
        assert rle["size"] == list(mask.shape)
        assert rle["counts"] == _coco_string(mask)
        assert np.array_equal(_decode(rle), mask)


def test_counts_string_of_pycocotools_examples() -> None:
    assert counts_string(np.array([6])) == "6"
    assert counts_string(np.array([0, 6])) == "06"
    assert counts_string(np.array([])) == ""


def test_rle_regions_decode_to_their_components() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        height, width = (int(v) for v in rng.integers(1, 18, 2))
        binary = (rng.random((height, width)) < 0.45).astype(np.uint8) * 255
        regions = rle_regions(binary, 3)
        polygons = class_regions(binary, 3)
        assert [(r.area, r.bbox) for r in regions] == [(r.area, r.bbox) for r in polygons]
        union = np.zeros((height, width), np.uint8)
        for region in regions:
            assert region.rle is not None and region.class_id == 3
            decoded = _decode(region.rle)
            assert decoded.sum() == region.area
            assert region.rle["counts"] == _coco_string(decoded)  # canonical: maximal runs
            union += decoded
        assert np.array_equal(union, binary > 0)


def test_rle_regions_of_a_crop_that_spans_whole_columns_and_min_area() -> None:
    binary = np.zeros((6, 8), np.uint8)
    binary[:, 2:5] = 255  # runs continue from one column's foot to the next column's head
    binary[0, 7] = 255
    big, speck = rle_regions(binary, 1)
    assert (big.area, big.bbox, speck.area) == (18, (2, 0, 3, 6), 1)
    assert big.rle is not None
    assert np.array_equal(_decode(big.rle), np.pad(binary[:, :5] > 0, ((0, 0), (0, 3))))
    assert [r.area for r in rle_regions(binary, 1, min_area=2)] == [18]
    assert big.as_dict() == {"area": 18, "bbox": [2, 0, 3, 6], "rle": big.rle}
