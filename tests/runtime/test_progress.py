"""`runtime.progress.ProgressBar`: what the stream shows for files, redrawn in place on one line."""

from __future__ import annotations

import io

from runtime.progress import ProgressBar


def test_bar_ends_at_the_total_on_one_line() -> None:
    stream = io.StringIO()
    bar = ProgressBar(total=4, label="drive.mp4 ", stream=stream, width=8)
    for done in range(1, 5):
        bar.update(done)
    bar.close()
    text = stream.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    final = text.rstrip("\n").split("\r")[-1]
    assert final.startswith("drive.mp4 4/4 [########] 100%") and final.endswith(" fps")
    assert "\r" in text  # redrawn in place, not one line per frame


def test_partial_progress_and_unknown_totals() -> None:
    stream = io.StringIO()
    bar = ProgressBar(total=8, stream=stream, width=8)
    bar.update(2)
    bar.close()  # ended early (Ctrl-C): the last state is drawn
    assert stream.getvalue().rstrip("\n").split("\r")[-1].startswith("2/8 [##......]  25%")
    stream = io.StringIO()
    bar = ProgressBar(total=None, stream=stream)
    bar.update(7)
    bar.close()
    assert stream.getvalue().rstrip("\n").split("\r")[-1].startswith("7 frames")


def test_nothing_is_drawn_when_no_frame_was_counted() -> None:
    stream = io.StringIO()
    ProgressBar(total=10, stream=stream).close()
    assert stream.getvalue() == ""
