"""Parsing of the CLI's size (`HxW`) and shape (`NxCxHxW`) strings, with click parameter types."""

from __future__ import annotations

import click

MAX_SIDE = 8192  # the largest height or width any command accepts (runtime/artifact.py holds the same limit)


def check_size(size: tuple[int, ...], what: str = "size") -> tuple[int, ...]:
    """`size` (..., H, W) if H and W are within `MAX_SIDE`, else `ValueError` naming the limit (a 100000x100000
    float32 image alone is 120 GB: refused before anything is allocated)."""
    if max(size[-2:]) > MAX_SIDE:
        text = "x".join(str(d) for d in size)
        raise ValueError(f"{what} {text} is too large: at most {MAX_SIDE} per side (height and width)")
    return size


def padded_size(size: tuple[int, int], divisor: int) -> tuple[int, int]:
    """`size` rounded up to a multiple of `divisor`: what export and the runtime feed a model of that divisor
    (`runtime.preprocess.padded_size`, which the runtime keeps for itself: it may not import cfnet)."""
    return -(-size[0] // divisor) * divisor, -(-size[1] // divisor) * divisor


def parse_dims(text: str, count: int, what: str) -> tuple[int, ...]:
    """Parse `count` positive integers joined by `x` (e.g. `512x1024`), or raise `ValueError`."""
    parts = text.lower().split("x")
    if len(parts) != count or not all(p.strip().isdigit() for p in parts):
        example = "x".join(["512", "1024"] if count == 2 else ["1", "3", "512", "1024"])
        raise ValueError(f"malformed {what} '{text}': expected {count} integers like {example}")
    dims = tuple(int(p) for p in parts)
    if min(dims) <= 0:
        raise ValueError(f"malformed {what} '{text}': every dimension must be positive")
    return check_size(dims, what)


def parse_size(text: str) -> tuple[int, int]:
    """`512x1024` -> (512, 1024), height first."""
    h, w = parse_dims(text, 2, "size")
    return h, w


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """`1x3x512x1024` -> (1, 3, 512, 1024)."""
    n, c, h, w = parse_dims(text, 4, "shape")
    return n, c, h, w


class _DimsType(click.ParamType):
    def __init__(self, count: int, name: str) -> None:
        self.count = count
        self.name = name

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if isinstance(value, tuple):
            return value
        try:
            return parse_dims(str(value), self.count, self.name)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = _DimsType(2, "size")
SHAPE = _DimsType(4, "shape")
