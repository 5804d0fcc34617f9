"""A command never deletes what it did not write (issue 25 item 2: `cfnet demo --out .` deleted the user's files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.helpers import fails_cleanly


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def users_folder(tmp_path: Path) -> Path:
    """The issue's folder: the user's data and a run of their own."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("years of work")
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "last.pt").write_bytes(b"weights")
    return tmp_path


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [([], "not made by cfnet demo"), (["--overwrite"], "data exists and was not written by cfnet demo")],
)
def test_demo_in_a_folder_of_the_users_deletes_nothing(
    extra: list[str], fragment: str, users_folder: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(users_folder)
    before = _digest(users_folder)
    err = fails_cleanly(["demo", "--out", ".", *extra], capsys)
    assert fragment in err
    assert _digest(users_folder) == before


def test_demo_overwrite_adds_its_files_beside_the_users(tmp_path: Path) -> None:
    """`--overwrite` in a folder without the demo's folders: the folder becomes the demo's, the user's file stays."""
    from bench.demo import MARKER, prepare_out

    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "REPORT.md").write_text("an old report")  # one of the demo's files: replaced by the run
    prepare_out(tmp_path, overwrite=True)
    assert (tmp_path / MARKER).is_file() and (tmp_path / "notes.txt").read_text() == "mine"
    prepare_out(tmp_path, overwrite=False)  # the demo's folder now: a rerun needs no flag


def test_a_rerun_in_the_demos_own_folder_needs_no_flag(tmp_path: Path) -> None:
    from bench.demo import MARKER, prepare_out

    prepare_out(tmp_path / "demo", overwrite=False)
    (tmp_path / "demo" / "data").mkdir()  # what a first run wrote
    prepare_out(tmp_path / "demo", overwrite=False)
    assert (tmp_path / "demo" / MARKER).is_file()


def test_data_synth_overwrite_never_deletes_a_folder_that_is_not_a_data_set(
    users_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digest(users_folder)
    err = fails_cleanly(["data", "synth", str(users_folder / "data"), "--overwrite", "--train", "1", "--val", "0"],
                        capsys)
    assert "--overwrite would delete precious.txt" in err
    assert _digest(users_folder) == before


def test_data_synth_overwrite_replaces_a_data_set(tmp_path: Path) -> None:
    from cfnet.data.synth import synthesize

    synthesize(tmp_path / "d", train=1, val=0, size=(32, 32), seed=0)
    synthesize(tmp_path / "d", train=0, val=1, size=(32, 32), seed=0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "d" / "leftImg8bit").iterdir()) == ["val"]
