"""Fixtures for gateway tests: the gateway in front of the simulator (or an echo upstream)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio

from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.gateway.echo import running_echo

# The default key prefix of the Redis coordinator: its breaker keys never expire, so every
# test that runs a gateway on Redis deletes them before and after it runs (`clean_redis`).
REDIS_PREFIX = "gateway:"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
async def gateway(graph_sim: SimHandle, sqlite_url: str) -> AsyncIterator[GatewayHandle]:
    """The gateway (SQLite ledger) in front of a fresh simulator."""
    async with running_gateway(graph_sim.url, sqlite_url) as handle:
        yield handle


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    async with running_echo() as url:
        yield url


@pytest.fixture
async def echo_gateway(echo_url: str, sqlite_url: str) -> AsyncIterator[GatewayHandle]:
    """The gateway in front of an upstream that reports what it received."""
    async with running_gateway(echo_url, sqlite_url) as handle:
        yield handle


@pytest.fixture
async def clean_redis(redis_url: str) -> AsyncIterator[str]:
    """*redis_url*, without any key of the coordinator's default prefix before or after."""
    client = redis.asyncio.Redis.from_url(redis_url)

    async def wipe() -> None:
        keys = [key async for key in client.scan_iter(match=f"{REDIS_PREFIX}*")]
        if keys:
            await client.delete(*keys)

    await wipe()
    try:
        yield redis_url
    finally:
        await wipe()
        await client.aclose()
