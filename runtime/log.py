"""What a long run says on stderr while it goes on: warnings (a camera down, a full disk), events (a camera
back, a source added) and errors, as text lines (`warning: ...`) or, with `set_format("json")` (`cfnet stream
--log-format json`), one JSON object a line for journald, Loki or any log shipper:
`{"time": "2025-01-01T12:00:00.000Z", "level": "warning", "message": "...", "stream": "cam1", ...}`.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from typing import Any

FORMATS = ("text", "json")
_state = {"format": "text"}
_lock = threading.Lock()


def set_format(name: str) -> None:
    """`text` (the default) or `json`."""
    if name not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got '{name}'")
    _state["format"] = name


def json_lines() -> bool:
    """Whether log lines are JSON objects."""
    return _state["format"] == "json"


def log(level: str, message: str, **fields: Any) -> None:
    """One line on stderr: `message` (info) or `<level>: message` as text; a JSON object with `fields`."""
    if json_lines():
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line = json.dumps({"time": stamp, "level": level, "message": message, **fields}, default=str)
    else:
        line = message if level == "info" else f"{level}: {message}"
    with _lock:
        print(line, file=sys.stderr, flush=True)


def info(message: str, **fields: Any) -> None:
    log("info", message, **fields)


def warning(message: str, **fields: Any) -> None:
    log("warning", message, **fields)


def error(message: str, **fields: Any) -> None:
    log("error", message, **fields)
