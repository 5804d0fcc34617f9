"""Click parameter types shared by every command (cfnet, export, bench and the runtime's own): numbers that
make sense or a one-line usage error, never a NaN that poisons a run or a crash deep inside a library.

The runtime holds them because every CLI may import the runtime, and the runtime may import no other package.
"""

from __future__ import annotations

import math
from typing import Any

import click

SEED_MAX = 2**32 - 1  # numpy's legacy `np.random.seed` takes no more; torch and `random` take these too


class Float(click.FloatRange):
    """A finite float within an optional range: `nan`, `inf` and out-of-range values are refused up front.

    `click.FloatRange` alone accepts `nan` (every comparison with it is false) and infinities.
    Every float option of the CLI uses this type (a test walks the commands and checks it).
    """

    name = "float"

    def __init__(
        self,
        min: float | None = None,  # noqa: A002 - click's own keyword names
        max: float | None = None,  # noqa: A002
        min_open: bool = False,
        max_open: bool = False,
    ) -> None:
        super().__init__(min=min, max=max, min_open=min_open, max_open=max_open)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def positive(maximum: float | None = None) -> Float:
    """A finite float > 0 (and <= `maximum`)."""
    return Float(min=0, min_open=True, max=maximum)


NON_NEGATIVE = Float(min=0)
SEED = click.IntRange(0, SEED_MAX)
