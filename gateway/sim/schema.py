"""The simulator's configuration error; typed document parsing lives in gateway.core.schema."""

from __future__ import annotations

from gateway.core.schema import build as build


class SimConfigError(ValueError):
    """The configuration (file or control-API payload) is invalid; lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))
