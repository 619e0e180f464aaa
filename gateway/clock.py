"""Clocks: the only module that reads time or sleeps.

Everything else takes a `Clock`, so tests can swap in `ManualClock` (gateway.testing) and
nothing in the code base reads the wall clock behind their back.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """A source of time and a way to wait for it."""

    def now(self) -> float:
        """Wall-clock time as POSIX seconds (UTC)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; for measuring durations."""

    async def sleep(self, seconds: float) -> None:
        """Wait *seconds* (returns at once for zero or negative values)."""


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class OffsetClock:
    """A clock that runs with *base* but can be pushed forward.

    The simulator uses it so tests can jump past a 5-minute throttle block without waiting:
    `advance()` moves `now()` and `monotonic()` forward; `sleep()` still takes real time, since
    what it models (latency, a stalled response) is measured by the client's real timeout.
    """

    def __init__(self, base: Clock | None = None) -> None:
        self._base: Clock = base or SystemClock()
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self.offset += seconds

    def now(self) -> float:
        return self._base.now() + self.offset

    def monotonic(self) -> float:
        return self._base.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        await self._base.sleep(seconds)
