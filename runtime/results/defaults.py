"""The results options' choices and defaults, in a module of constants only: the command line's face
(`runtime.results.options`) reads them without loading numpy or OpenCV."""

from __future__ import annotations

REGION_MODES = ("polygon", "rle", "none")  # `--regions`
DEFAULT_WINDOW_S = 10.0  # seconds of stream time the drift score averages
DEFAULT_HOLD_S = 10.0  # seconds above the threshold before the warning (`--drift-window`)
DEFAULT_ALERT = 0.2  # `--drift-alert`: measured in docs/DESIGN.md (in-distribution <= 0.08, night 0.28, fog 0.8)
