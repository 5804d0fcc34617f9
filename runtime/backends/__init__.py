"""The backends' face: `Backend` (the base every backend implements), `open_backend` (path or URL -> backend)
and `available_backends` (which of them this machine can run, and why not)."""

from __future__ import annotations

from runtime.backends.base import Backend
from runtime.backends.factory import DEVICES, available_backends, open_backend, read_metadata

__all__ = ["DEVICES", "Backend", "available_backends", "open_backend", "read_metadata"]
