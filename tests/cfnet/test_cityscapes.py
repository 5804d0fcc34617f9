"""CityscapesDataset on small layouts written here: pairing, label mapping, and each bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cfnet.cli import main
from cfnet.data.cityscapes import CityscapesDataset, describe
from cfnet.data.labels import LABELS, MEAN, STD
from cfnet.errors import UserError

IDS = [label.id for label in LABELS if label.id >= 0]


def _write(
    root: Path,
    split: str,
    city: str,
    index: int,
    h: int = 12,
    w: int = 20,
    seed: int = 0,
    suffix: str = "_gtFine_labelIds.png",
) -> tuple[Path, Path]:
    rng = np.random.default_rng([seed, index])
    name = f"{city}_{index:06d}_000019"
    image = root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"
    label = root / "gtFine" / split / city / f"{name}{suffix}"
    image.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(image), rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
    cv2.imwrite(str(label), rng.choice(IDS, (h, w)).astype(np.uint8))
    return image, label


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    for i in range(2):
        _write(tmp_path, "val", "bonn", i)
    _write(tmp_path, "val", "aachen", 5)
    return tmp_path


def test_pairs_are_found_sorted_and_read_as_trainids(layout: Path) -> None:
    ds = CityscapesDataset(layout, "val")
    assert len(ds) == 3
    assert [s.name for s in ds.samples] == ["aachen_000005_000019", "bonn_000000_000019", "bonn_000001_000019"]
    assert ds.samples[1].result_name == "bonn_000000_000019_leftImg8bit.png"
    image, label = ds[1]
    assert image.dtype == torch.float32 and image.shape == (3, 12, 20)
    assert label.dtype == torch.int64 and label.shape == (12, 20)
    bgr = cv2.imread(str(ds.samples[1].image))
    raw = cv2.imread(str(ds.samples[1].label), cv2.IMREAD_UNCHANGED)
    assert bgr is not None and raw is not None
    rgb = bgr[..., ::-1] / 255.0
    expected = (rgb - np.array(MEAN)) / np.array(STD)
    assert np.allclose(image.numpy().transpose(1, 2, 0), expected, atol=1e-5)
    train_id = {label.id: label.train_id for label in LABELS}
    expected_label = [[train_id[v] if 0 <= train_id[v] < 255 else 255 for v in row] for row in raw.tolist()]
    assert label.tolist() == expected_label


def test_label_train_ids_files_win(layout: Path) -> None:
    image, _ = _write(layout, "val", "bonn", 0)
    trainids = layout / "gtFine" / "val" / "bonn" / "bonn_000000_000019_gtFine_labelTrainIds.png"
    values = np.full((12, 20), 255, np.uint8)
    values[:, :5] = 13
    cv2.imwrite(str(trainids), values)
    ds = CityscapesDataset(layout, "val")
    assert ds.samples[1].label == trainids and ds.samples[1].train_ids
    assert np.array_equal(ds[1][1].numpy(), values)


def test_describe_counts_classes(layout: Path) -> None:
    report = describe(layout, "val")
    assert report["images"] == 3 and report["cities"] == ["aachen", "bonn"] and report["sizes"] == ["12x20"]
    shares = report["classes"]
    assert isinstance(shares, dict)
    assert sum(shares.values()) + report["ignored"] == pytest.approx(1.0)  # type: ignore[operator]


def _expect(root: Path, split: str, message: str, where: Path) -> None:
    with pytest.raises(UserError, match=message) as info:
        CityscapesDataset(root, split)
    assert info.value.where == str(where)


def test_missing_data_dir(tmp_path: Path) -> None:
    _expect(tmp_path / "nope", "val", "data folder not found", tmp_path / "nope")


def test_missing_and_empty_split(layout: Path) -> None:
    _expect(layout, "train", "no 'train' split", layout / "leftImg8bit" / "train")
    (layout / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    _expect(layout, "test", "empty split", layout / "leftImg8bit" / "test")


def test_image_without_label(layout: Path) -> None:
    image, label = _write(layout, "val", "bonn", 7)
    label.unlink()
    _expect(layout, "val", "image without label", image)


def test_corrupt_and_truncated_pngs(layout: Path) -> None:
    image, _ = _write(layout, "val", "bonn", 7)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    _expect(layout, "val", "truncated PNG", image)
    image.write_bytes(b"this is not a png at all, not even close")
    _expect(layout, "val", "not a PNG", image)
    image.write_bytes(data)
    _, label = _write(layout, "val", "bonn", 8)
    label.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    _expect(layout, "val", "cannot decode label", label)


def test_corrupt_image_body_fails_when_read(layout: Path) -> None:
    image, _ = _write(layout, "val", "bonn", 7)
    data = bytearray(image.read_bytes())
    data[40:-20] = bytes(len(data) - 60)  # header and end chunk intact, compressed data destroyed
    image.write_bytes(bytes(data))
    ds = CityscapesDataset(layout, "val")
    with pytest.raises(UserError, match="cannot decode image") as info:
        ds[3]
    assert info.value.where == str(image)


def test_unknown_label_id(layout: Path) -> None:
    _, label = _write(layout, "val", "bonn", 7)
    values = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    assert values is not None
    values[3, 4] = 40
    cv2.imwrite(str(label), values)
    _expect(layout, "val", "unknown label id 40", label)


def test_colour_label_is_rejected(layout: Path) -> None:
    _, label = _write(layout, "val", "bonn", 7)
    cv2.imwrite(str(label), np.zeros((12, 20, 3), np.uint8))
    _expect(layout, "val", "single-channel", label)


def test_size_mismatch(layout: Path) -> None:
    _, label = _write(layout, "val", "bonn", 7)
    cv2.imwrite(str(label), np.full((12, 21), 7, np.uint8))
    _expect(layout, "val", "differs from image size", label)


def _unknown_id(root: Path) -> Path:
    _, label = _write(root, "val", "bonn", 7)
    cv2.imwrite(str(label), np.full((12, 20), 77, np.uint8))
    return label


def _no_label(root: Path) -> Path:
    image, label = _write(root, "val", "bonn", 7)
    label.unlink()
    return image


def _corrupt(root: Path) -> Path:
    image, _ = _write(root, "val", "bonn", 7)
    image.write_bytes(b"garbage")
    return image


def _size_mismatch(root: Path) -> Path:
    _, label = _write(root, "val", "bonn", 7)
    cv2.imwrite(str(label), np.full((10, 20), 7, np.uint8))
    return label


def _missing_dir(root: Path) -> Path:
    return root / "missing"


def _empty_split(root: Path) -> Path:
    for path in (root / "leftImg8bit" / "val").rglob("*.png"):
        path.unlink()
    return root / "leftImg8bit" / "val"


@pytest.mark.parametrize("breaker", [_unknown_id, _no_label, _corrupt, _size_mismatch, _missing_dir, _empty_split])
def test_cli_reports_bad_data_in_one_line(
    layout: Path, capsys: pytest.CaptureFixture[str], breaker: Callable[[Path], Path]
) -> None:
    culprit = breaker(layout)
    data = culprit if breaker is _missing_dir else layout
    with pytest.raises(SystemExit) as info:
        main(["data", "check", str(data), "--split", "val"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and err[0].endswith(f"({culprit})")
