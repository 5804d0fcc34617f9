"""The one exception type for expected failures of the train-time packages (cfnet, export, bench)."""

from __future__ import annotations


class UserError(Exception):
    """An expected failure: the CLI prints `error: <what> (<where>)` and exits 2, without a traceback."""

    def __init__(self, what: str, where: str | None = None) -> None:
        self.what = what
        self.where = where
        super().__init__(f"{what} ({where})" if where else what)
