"""The Cityscapes label table and its lookup tables."""

from __future__ import annotations

import numpy as np

from cfnet.data import labels as L


def test_table_rows_match_cityscapes_scripts() -> None:
    assert len(L.LABELS) == 35
    by_name = {label.name: label for label in L.LABELS}
    assert by_name["road"] == (7, "road", 0, (128, 64, 128))
    assert by_name["sky"] == (23, "sky", 10, (70, 130, 180))
    assert by_name["bicycle"] == (33, "bicycle", 18, (119, 11, 32))
    assert by_name["license plate"].id == -1 and by_name["license plate"].train_id == -1
    assert by_name["polegroup"].train_id == 255
    ids = [label.id for label in L.LABELS if label.id >= 0]
    assert sorted(ids) == list(range(34))


def test_train_classes_are_the_19_in_train_id_order() -> None:
    assert L.NUM_CLASSES == 19 == len(L.TRAIN_CLASSES) == len(L.PALETTE)
    for train_id, (name, color) in enumerate(zip(L.TRAIN_CLASSES, L.PALETTE, strict=True)):
        rows = [label for label in L.LABELS if label.train_id == train_id]
        assert len(rows) == 1 and rows[0].name == name and rows[0].color == color


def test_lookup_tables() -> None:
    assert L.ID_TO_TRAIN_ID.dtype == np.uint8 and L.ID_TO_TRAIN_ID.shape == (256,)
    for label in L.LABELS:
        if label.id >= 0:
            expected = label.train_id if 0 <= label.train_id < 255 else L.IGNORE_INDEX
            assert L.ID_TO_TRAIN_ID[label.id] == expected
    assert (L.ID_TO_TRAIN_ID[34:] == 255).all()
    train_ids = np.arange(19)
    assert (L.ID_TO_TRAIN_ID[L.TRAIN_ID_TO_ID[train_ids]] == train_ids).all()
    assert L.TRAIN_ID_TO_ID[255] == 0  # ignored pixels are written as `unlabeled`
    assert tuple(L.COLOR_BY_ID[7]) == (128, 64, 128)
    assert L.MEAN == (0.485, 0.456, 0.406) and L.STD == (0.229, 0.224, 0.225)
