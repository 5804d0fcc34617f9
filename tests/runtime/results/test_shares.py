"""Per-class pixel shares: ids outside the classes count in the denominator only."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.results.shares import class_counts, class_shares, shares_dict


def test_counts_and_shares_with_ignored_pixels() -> None:
    mask = np.array([[0, 0, 1, 255], [2, 2, 2, 7]], np.uint8)
    assert class_counts(mask, 3).tolist() == [2, 1, 3]
    assert class_shares(mask, 3).tolist() == [2 / 8, 1 / 8, 3 / 8]
    assert class_counts(mask.astype(np.int64) - 1, 3).tolist() == [1, 3, 0]  # negative ids are no class
    assert class_counts(mask, 300).sum() == 8 and class_counts(mask, 300)[255] == 1


def test_uint8_and_wide_masks_agree() -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 20, (37, 53)).astype(np.uint8)
    assert np.array_equal(class_counts(mask, 19), class_counts(mask.astype(np.int32), 19))
    assert np.array_equal(class_counts(mask, 19), np.bincount(mask.ravel(), minlength=20)[:19])


def test_shares_dict_names_every_class() -> None:
    assert shares_dict(np.array([0.25, 0.0, 0.1234567]), ["road", "car", "sky"]) == {
        "road": 0.25, "car": 0.0, "sky": 0.123457,
    }
    with pytest.raises(ValueError, match="2 shares for 3 classes"):
        shares_dict([0.5, 0.5], ["a", "b", "c"])
    with pytest.raises(ValueError, match="at least 1"):
        class_counts(np.zeros((2, 2), np.uint8), 0)
