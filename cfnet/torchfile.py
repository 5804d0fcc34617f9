"""Reading torch files (`torch.save` output) of tensors and numbers: `torch.load(weights_only=True)` behind
one-line errors.

Checkpoints, ResNet-50 and MiT weights are all read here. A file that is not a torch file at all (text, a Git
LFS pointer, an HTML page saved instead of the download, a plain pickle) is named as such before torch parses
it (torch would raise KeyError or struct.error, or call it an unsafe pickle). A torch file holding pickled
objects (a whole `nn.Module`) is refused naming the object; torch's advice to load it with `weights_only=False`
and its ANSI colour codes never reach the user.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from cfnet.errors import UserError

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # torch >= 1.6 writes a zip archive (an empty one: end record only)
LEGACY_MAGIC = b"\x80\x02"  # older torch: pickle protocol 2, starting with its magic number
LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def load_torch_file(path: str | Path, what: str) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)`; any failure is a one-line `UserError` naming
    `path`: `not a <what>` (a folder, or a file that is something else), `corrupt or unreadable <what>`, or
    `cannot read <what>` (the operating system refused)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"not a {what}: a folder", str(path))
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise UserError(f"cannot read {what}: {exc.strerror}", str(path)) from exc
    if not head.startswith((*ZIP_MAGIC, LEGACY_MAGIC)):
        kind = _what_it_is(head)
        raise UserError(f"not a {what}" + (f": {kind}" if kind else ""), str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": one line of output, not two
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        held = f"a pickled {found.group(1)}" if found else "pickled objects"
        raise UserError(f"not a {what}: it holds {held}, and only tensors and numbers are loaded", str(path)) from exc
    except Exception as exc:  # truncated or damaged archives raise many types (RuntimeError, EOFError, ...)
        raise UserError(f"corrupt or unreadable {what}", str(path)) from exc


def _what_it_is(head: bytes) -> str:
    """What a file starting with `head` is, when that is recognisable; '' otherwise."""
    text = head.lstrip().lower()
    if not head:
        return "the file is empty"
    if head.startswith(LFS_POINTER):
        return "a Git LFS pointer (fetch the file with `git lfs pull`)"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<!--")):
        return "an HTML page (a download that returned a web page?)"
    if head.startswith(b"\x80"):
        return "a Python pickle, not a torch file"
    return ""
