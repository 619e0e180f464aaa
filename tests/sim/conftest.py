"""Fixtures of the simulator tests: an aiohttp session, and a Graph client on `graph_sim`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.testing import SimHandle
from tests.sim.support import CLIENT_TIMEOUT, Graph


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        yield session


@pytest.fixture
def graph(http: aiohttp.ClientSession, graph_sim: SimHandle) -> Graph:
    """A Graph client of the test's fresh simulator, as Alice, version-relative paths at v25.0."""
    return Graph(http, graph_sim.url)
