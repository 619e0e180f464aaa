"""`async with` for every store: leaving the block closes it (both ledgers share this)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncClosing:
    """Adds `async with` to a class that has `aclose()`."""

    async def aclose(self) -> None:  # pragma: no cover - every store defines its own
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
