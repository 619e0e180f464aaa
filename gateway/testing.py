"""Test support shipped with the package, and the pytest plugin that exposes it.

`running_simulator()` starts the Graph simulator on a free loopback port; `SimHandle` drives
its control API over real HTTP. `running_gateway()` starts the gateway in front of any
upstream. The `graph_sim` fixture gives each test a fresh simulator with the documented
defaults; `graph_sim_factory` starts one from a configuration of the test's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any, TypeVar, cast

import pytest

from gateway.app import GatewayHandle as GatewayHandle
from gateway.app import running_gateway as running_gateway
from gateway.clock import SystemClock
from gateway.sim import SimConfig
from gateway.sim.handle import SimHandle as SimHandle
from gateway.sim.handle import running_simulator as running_simulator

try:  # pytest-asyncio comes with pytest-aiohttp (the dev extra); the plugin works without it
    import pytest_asyncio

    _fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - only without the dev extra
    _fixture = pytest.fixture

F = TypeVar("F", bound=Callable[..., Any])


def _async_fixture(fn: F) -> F:
    return cast(F, _fixture(fn))


SimFactory = Callable[..., Awaitable[SimHandle]]


class JumpClock:
    """Real time that a test can move forward (with the simulator's `advance()`), waking every
    sleeper whose time has come: a gateway waiting out a 60 s throttle block wakes as soon as
    the test jumps past it."""

    def __init__(self) -> None:
        self._clock = SystemClock()
        self.offset = 0.0
        self._jumped = asyncio.Event()

    def now(self) -> float:
        return self._clock.now() + self.offset

    def monotonic(self) -> float:
        return self._clock.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        until = self.monotonic() + seconds
        while (left := until - self.monotonic()) > 0:
            jumped = self._jumped
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(jumped.wait(), left)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self.offset += seconds
        self._jumped.set()
        self._jumped = asyncio.Event()


@_async_fixture
async def graph_sim() -> AsyncIterator[SimHandle]:
    """A fresh simulator with the documented default accounts and tokens."""
    async with running_simulator() as sim:
        yield sim


@_async_fixture
async def graph_sim_factory() -> AsyncIterator[SimFactory]:
    """`await graph_sim_factory({...config...})` starts a simulator with that configuration."""
    async with AsyncExitStack() as stack:

        async def start(config: SimConfig | Mapping[str, Any] | None = None) -> SimHandle:
            return await stack.enter_async_context(running_simulator(config))

        yield start
