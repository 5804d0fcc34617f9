"""The synthetic generator: layout and names, determinism, classes, geometry, the video, the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cfnet.cli import main
from cfnet.data.cityscapes import CityscapesDataset
from cfnet.data.labels import ID_BY_NAME, ID_TO_TRAIN_ID, VALID_IDS
from cfnet.data.scene import CAMERA_HEIGHT, Renderer, Scene, Thing, car, person, pole, random_scene
from cfnet.data.synth import render_image, synthesize, synthesize_video
from cfnet.errors import UserError

SIZE = (64, 128)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def test_layout_names_and_labels(tmp_path: Path) -> None:
    out = synthesize(tmp_path / "synth", train=3, val=2, size=SIZE, seed=0, workers=1)
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert "leftImg8bit/train/synthville/synthville_000002_000019_leftImg8bit.png" in names
    assert "gtFine/val/renderdorf/renderdorf_000001_000019_gtFine_labelIds.png" in names
    assert "gtFine/val/renderdorf/renderdorf_000001_000019_gtFine_color.png" in names
    assert len(names) == 5 * 3
    label = cv2.imread(
        str(out / "gtFine/train/synthville/synthville_000000_000019_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED
    )
    assert label is not None
    assert label.dtype == np.uint8 and label.shape == SIZE
    assert set(np.unique(label).tolist()) <= VALID_IDS
    assert ID_BY_NAME["road"] in label and 0 not in label  # labelIds (road 7), not trainIds (road 0)
    ds = CityscapesDataset(out, "train")
    assert len(ds) == 3 and ds[0][0].shape == (3, *SIZE)
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", train=6, val=4, size=SIZE, seed=3, workers=1)
    b = synthesize(tmp_path / "b", train=6, val=4, size=SIZE, seed=3, workers=2)
    c = synthesize(tmp_path / "c", train=6, val=4, size=SIZE, seed=4, workers=1)
    assert _digests(a) == _digests(b)
    assert _digests(a).keys() == _digests(c).keys() and _digests(a) != _digests(c)


def test_scenes_hold_many_classes() -> None:
    present: set[int] = set()
    for i in range(8):
        _, label = render_image((128, 256), seed=0, split="train", index=i)
        train_ids = ID_TO_TRAIN_ID[label]
        present |= set(np.unique(train_ids[train_ids < 255]).tolist())
    assert len(present) >= 14, sorted(present)


def _empty_scene(**changes: object) -> Scene:
    scene = random_scene(np.random.default_rng(0))
    scene.things = []
    scene.hood = False
    scene.cam_x = 0.0
    for key, value in changes.items():
        setattr(scene, key, value)
    return scene


def test_projection_puts_things_where_a_pinhole_camera_sees_them() -> None:
    rng = np.random.default_rng(0)
    scene = _empty_scene()
    scene.things = [pole(rng, 2.0, 20.0, 1)]
    renderer = Renderer((128, 256))
    _, label = renderer.render(scene)
    f, cx, v0 = 0.75 * 256, 127.5, scene.horizon * 128
    u = cx + f * 2.0 / 20.0
    v_ground = v0 + f * CAMERA_HEIGHT / 20.0
    assert label[int(round(v_ground)) - 2, int(round(u))] == ID_BY_NAME["pole"]
    assert label[int(round(v_ground)) - 2, int(round(cx + f * 3.0 / 20.0))] != ID_BY_NAME["pole"]
    # the ground: road straight ahead below the horizon, sky above
    assert label[127, 128] == ID_BY_NAME["road"] and label[2, 128] == ID_BY_NAME["sky"]


def test_nearer_things_occlude_farther_ones_whatever_the_order() -> None:
    rng = np.random.default_rng(1)
    near = car(rng, 0.0, 8.0, False, 0.0)
    far = person(np.random.default_rng(2), 0.0, 16.0)
    renderer = Renderer((128, 256))
    v = int(round(_empty_scene().horizon * 128)) + 4  # a row through the car's rear window and the person's chest
    for things in ([near, far], [far, near]):
        _, label = renderer.render(_empty_scene(things=things))
        assert label[v, 128] == ID_BY_NAME["car"]
    _, label = renderer.render(_empty_scene(things=[far]))
    assert label[v, 128] == ID_BY_NAME["person"]


def test_things_move_with_the_frame() -> None:
    thing = car(np.random.default_rng(0), 0.0, 20.0, False, 1.0)
    renderer = Renderer((64, 128))
    _, first = renderer.render(_empty_scene(things=[thing]), frame=0)
    _, later = renderer.render(_empty_scene(things=[Thing(thing.parts, thing.speed)]), frame=10)
    cars = ID_BY_NAME["car"]
    assert (later == cars).sum() < (first == cars).sum()  # 10 m farther away: smaller


def test_video(tmp_path: Path) -> None:
    out = synthesize_video(tmp_path / "drive.mp4", frames=6, size=SIZE, seed=0)
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 6 and frames[0].shape == (*SIZE, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 2  # the camera moved
    assert [p.name for p in tmp_path.iterdir()] == ["drive.mp4"]
    with pytest.raises(UserError, match="mp4"):
        synthesize_video(tmp_path / "drive.avi", frames=2, size=SIZE)


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="--overwrite") as info:
        synthesize(out, train=1, val=1, size=SIZE, workers=1)
    assert info.value.where == str(out)
    with pytest.raises(UserError, match="--overwrite would delete keep.txt"):  # not a data set: never deleted
        synthesize(out, train=1, val=1, size=SIZE, workers=1, overwrite=True)
    (out / "keep.txt").unlink()
    synthesize(out, train=1, val=0, size=SIZE, workers=1)
    synthesize(out, train=1, val=1, size=SIZE, workers=1, overwrite=True)  # a data set is replaced
    assert len(list(out.rglob("*.png"))) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    with pytest.raises(SystemExit) as info:
        main(["data", "synth", str(out), "--train", "2", "--val", "1", "--size", "64x128", "--json"])
    assert info.value.code == 0
    assert '"train": 2' in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["data", "synth", str(out), "--train", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: output exists and is not empty (use --overwrite) ({out})"]
    with pytest.raises(SystemExit) as info:
        main(["data", "synth", str(out), "--size", "0x64"])
    assert info.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_writes_the_video_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "drive.mp4"
    with pytest.raises(SystemExit) as info:
        main(
            ["data", "synth", str(tmp_path / "d"), "--train", "1", "--val", "1", "--size", "64x128"]
            + ["--video", str(video), "--frames", "5", "--fps", "10"]
        )
    assert info.value.code == 0, capsys.readouterr().err
    capture = cv2.VideoCapture(str(video))
    count, fps = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
    capture.release()
    assert (count, fps, size) == (5, 10.0, (64, 128))
    assert f"video: {video} (5 frames)" in capsys.readouterr().out
