"""`--show`: the newest overlay of each stream in an OpenCV window (main thread); `q` or Esc stops the run."""

from __future__ import annotations

import cv2

from runtime.errors import UserError
from runtime.stream.state import Run
from runtime.stream.stats import RunStats

WINDOW = "cfnet stream"


def gui_available() -> bool:
    """Whether this OpenCV build can open a window (`opencv-python-headless` cannot)."""
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        cv2.destroyWindow(WINDOW)
    except cv2.error:
        return False
    return True


def require_gui() -> None:
    """Refuse `--show` where no window can open."""
    if not gui_available():
        raise UserError(
            "--show needs OpenCV with GUI support", "pip install opencv-python instead of the headless build"
        )


def show(run: Run, result: RunStats) -> None:
    """Main thread: show the newest overlay of each stream; `q` or Esc stops the run."""
    for i, frame in enumerate(result.latest):
        if frame is not None:
            cv2.imshow(WINDOW if len(result.latest) == 1 else f"{WINDOW} {i}: {result.streams[i].source}", frame)
    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
        run.abort("window closed")
