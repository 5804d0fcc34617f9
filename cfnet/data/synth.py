"""`cfnet data synth`: procedural urban scenes in the Cityscapes layout, and a synthetic driving video.

Each image is its own random street (`cfnet.data.scene`), seeded by (seed, split, index), so the same
arguments give byte-identical files. Files follow Cityscapes' names: `{city}_{seq:06d}_{frame:06d}` with
frame 19 (Cityscapes' annotated frame), images `_leftImg8bit.png` and labels `_gtFine_labelIds.png`
(labelIds, not trainIds) plus `_gtFine_color.png` for viewing.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from cfnet.atomic import FULL_DISK, atomic_path, make_folder, umask
from cfnet.data.labels import COLOR_BY_ID
from cfnet.data.scene import Renderer, random_scene
from cfnet.errors import UserError

CITIES = {"train": "synthville", "val": "renderdorf"}
LABEL_SUFFIX = "_gtFine_labelIds.png"
LAYOUT = ("leftImg8bit", "gtFine")  # what a data set folder holds
SPLIT_INDEX = {"train": 0, "val": 1}
FRAME = 19
VIDEO_STEP = 0.7  # metres the camera moves per frame


def render_image(size: tuple[int, int], seed: int, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The RGB image and labelId map of image `index` of `split` for `seed`."""
    scene = random_scene(np.random.default_rng([seed, SPLIT_INDEX[split], index]))
    return Renderer(size).render(scene)


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", array)  # encoded here, written by Python: a failed write raises OSError
    if not ok:
        raise UserError("cannot encode image", str(path))
    try:
        path.write_bytes(encoded.tobytes())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None


def _write_item(args: tuple[Path, tuple[int, int], int, str, int]) -> None:
    root, size, seed, split, index = args
    city = CITIES[split]
    name = f"{city}_{index:06d}_{FRAME:06d}"
    image, label = render_image(size, seed, split, index)
    _write_png(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    gt = root / "gtFine" / split / city
    _write_png(gt / f"{name}_gtFine_labelIds.png", label)
    _write_png(gt / f"{name}_gtFine_color.png", cv2.cvtColor(COLOR_BY_ID[label], cv2.COLOR_RGB2BGR))


def synthesize(
    out: str | Path,
    train: int = 200,
    val: int = 50,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    overwrite: bool = False,
    workers: int | None = None,
) -> Path:
    """Write `train` + `val` synthetic scenes under `out` in the Cityscapes layout; returns `out`.

    The set is built in a temporary folder beside `out` and renamed into place, so `out` is either
    complete or absent. An existing non-empty `out` is an error unless `overwrite`, and a folder holding anything
    besides a data set's `LAYOUT` is never replaced (it is not the command's to delete). `workers` processes
    render in parallel (default: the CPU count, at most 4); the bytes do not depend on it.
    """
    out = Path(out)
    if train < 0 or val < 0 or train + val == 0:
        raise UserError("nothing to write: --train and --val must be >= 0 and not both 0", str(out))
    h, w = size
    if h < 32 or w < 32:
        raise UserError(f"image size {h}x{w} too small: at least 32x32", str(out))
    tmp = _temp_folder(out, overwrite, lambda name: name in LAYOUT)
    try:
        jobs = []
        for split, count in (("train", train), ("val", val)):
            if count:
                for kind in ("leftImg8bit", "gtFine"):
                    (tmp / kind / split / CITIES[split]).mkdir(parents=True)
            jobs += [(tmp, (h, w), seed, split, i) for i in range(count)]
        n = workers if workers is not None else min(4, os.cpu_count() or 1)
        if n > 1 and len(jobs) > 8:
            with ProcessPoolExecutor(n) as pool:
                list(pool.map(_write_item, jobs, chunksize=4))
        else:
            for job in jobs:
                _write_item(job)
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _temp_folder(out: Path, overwrite: bool, belongs: Callable[[str], bool]) -> Path:
    """A fresh temporary folder beside `out` (refused when `out` exists, is not empty and not `overwrite`; and
    when it holds anything `belongs(name)` does not own: --overwrite replaces a data set, never other files)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError("output exists and is not empty (use --overwrite)", str(out))
    foreign = sorted(p.name for p in out.iterdir() if not belongs(p.name)) if out.is_dir() else []
    if foreign:
        raise UserError(f"--overwrite would delete {foreign[0]}, which is not part of a data set", str(out))
    make_folder(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o777 & ~umask())  # mkdtemp makes it private; the set is an ordinary folder
    return tmp


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder `tmp` to `out`, replacing what was there."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        tmp.rename(out)


def video_label_name(video: str | Path, index: int) -> str:
    """The label file of frame `index` of `video`, named as Cityscapes' (sequence 0):
    `drive_000000_000042_gtFine_labelIds.png` for frame 42 of `drive.mp4`."""
    return f"{Path(video).stem}_000000_{index:06d}{LABEL_SUFFIX}"


def synthesize_video(
    out: str | Path,
    frames: int = 150,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    fps: float = 15.0,
    labels: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an MP4 (mp4v) of a camera driving `frames * 0.7` m down one synthetic street; returns `out`.

    Cars move, the camera moves forward, things grow as they approach. Written to a temporary `.mp4`
    beside `out` (VideoWriter picks the container by extension), then renamed. `labels`: a folder for each
    frame's labelIds PNG (`video_label_name`), written to a temporary folder and renamed with the video; an
    existing non-empty folder is an error unless `overwrite`.
    """
    out = Path(out)
    if frames <= 0:
        raise UserError("--frames must be positive", str(out))
    if out.suffix.lower() != ".mp4":
        raise UserError("the video must be an .mp4 file", str(out))
    h, w = size
    scene = random_scene(np.random.default_rng([seed, 2]), length=frames * VIDEO_STEP + 110.0)
    renderer = Renderer(size)
    folder = None if labels is None else _temp_folder(Path(labels), overwrite, lambda name: name.endswith(LABEL_SUFFIX))
    try:
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a failed write is our one line, not a WARN
        with atomic_path(out) as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
            try:
                if not writer.isOpened():
                    raise UserError("OpenCV cannot open an mp4v video writer", str(out))
                for i in range(frames):
                    image, label = renderer.render(scene, cam_z=i * VIDEO_STEP, frame=i)
                    writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                    if shutil.disk_usage(tmp.parent).free == 0:  # OpenCV only warns about a failed write
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))
                    if folder is not None:
                        _write_png(folder / video_label_name(out, i), label)
            finally:
                writer.release()
                cv2.utils.logging.setLogLevel(level)
            _check_video(tmp, frames, out)
            if folder is not None and labels is not None:
                _move_into_place(folder, Path(labels))
    finally:
        if folder is not None and folder.exists():
            shutil.rmtree(folder)
    return out


def _check_video(path: Path, frames: int, out: Path) -> None:
    """A video OpenCV reports as written may be truncated (a write failed: OpenCV only warns): read its frame
    count back; a short one is a full disk where the disk is full, else an error of the write."""
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    if count == frames:
        return
    if shutil.disk_usage(path.parent).free < FULL_DISK:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))
    raise UserError(f"the video holds {count} of its {frames} frames after writing", str(out))
