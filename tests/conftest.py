"""Shared fixtures: real PostgreSQL and Redis on loopback, probed once per session.

``postgres_dsn`` and ``redis_url`` hand a test a reachable service, or skip it (locally) or
fail it (when the service is listed in ``GATEWAY_TEST_REQUIRE``, as in CI). A test marked
``postgres`` or ``redis`` gets the same treatment even if it does not ask for the fixture.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any

import asyncpg
import pytest
import redis.asyncio
import redis.exceptions

from tests.support import required_services, when_unavailable

DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
PROBE_TIMEOUT_SECONDS = 5.0


def pytest_configure(config: pytest.Config) -> None:
    # Reject a malformed GATEWAY_TEST_REQUIRE before any test runs.
    try:
        required_services(os.environ.get("GATEWAY_TEST_REQUIRE"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc


def _run(coro: Coroutine[Any, Any, str | None]) -> str | None:
    """Run a probe on a private event loop, leaving pytest-asyncio's loops alone."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _describe(exc: BaseException) -> str:
    detail = str(exc) or f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"
    return f"{type(exc).__name__}: {detail}"


async def _probe_postgres(dsn: str) -> str | None:
    """None if *dsn* accepts a connection and a query, else the reason it does not."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            conn = await asyncpg.connect(dsn, timeout=PROBE_TIMEOUT_SECONDS)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _describe(exc)
    return None


async def _probe_redis(url: str) -> str | None:
    """None if *url* answers PING, else the reason it does not."""
    client = redis.asyncio.Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT_SECONDS, socket_timeout=PROBE_TIMEOUT_SECONDS
    )
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            await client.ping()
    except (OSError, TimeoutError, redis.exceptions.RedisError) as exc:
        return _describe(exc)
    finally:
        await client.aclose()
    return None


def _unavailable(service: str, target: str, problem: str) -> None:
    reason = f"{service} not reachable at {target}: {problem}"
    required = required_services(os.environ.get("GATEWAY_TEST_REQUIRE"))
    if when_unavailable(service, required) == "fail":
        pytest.fail(f"{reason} (required by GATEWAY_TEST_REQUIRE)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """DSN of a reachable PostgreSQL database (GATEWAY_TEST_POSTGRES_DSN)."""
    dsn = os.environ.get("GATEWAY_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    problem = _run(_probe_postgres(dsn))
    if problem is not None:
        _unavailable("postgres", dsn, problem)
    return dsn


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis database (GATEWAY_TEST_REDIS_URL)."""
    url = os.environ.get("GATEWAY_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    problem = _run(_probe_redis(url))
    if problem is not None:
        _unavailable("redis", url, problem)
    return url


_SERVICE_FIXTURES = {"postgres": "postgres_dsn", "redis": "redis_url"}


@pytest.fixture(autouse=True)
def _services_for_markers(request: pytest.FixtureRequest) -> None:
    """A test marked ``postgres``/``redis`` is skipped or failed like one using the fixture.

    This also covers ``pytest.param(..., marks=pytest.mark.postgres)`` in parametrised
    fixtures, whose other params must not depend on the service.
    """
    for marker, fixture in _SERVICE_FIXTURES.items():
        if request.node.get_closest_marker(marker) is not None:
            request.getfixturevalue(fixture)
