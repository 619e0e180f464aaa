"""PostgresLedger behaviour beyond the Ledger contract: connecting, pool size, lost connections."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.errors import ConfigError, StoreUnavailable
from gateway.model import EntityQuery
from gateway.stores import open_ledger
from gateway.stores.postgres import open_postgres_ledger
from tests.pgschema import with_query

pytestmark = pytest.mark.postgres


async def _connections(admin_dsn: str, application_name: str) -> int:
    conn = await asyncpg.connect(admin_dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            application_name,
        )
        return count
    finally:
        await conn.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A loopback port that accepts TCP connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    yield port
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_refused_connection_raises_store_unavailable_at_once() -> None:
    """Nothing listening on the port: StoreUnavailable within a few seconds, not a hang."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="ConnectionRefused"):
        await open_ledger("postgresql://postgres@127.0.0.1:1/test")
    assert time.monotonic() - started < 5


async def test_a_server_that_never_answers_raises_store_unavailable_after_the_timeout(
    silent_server: int,
) -> None:
    """A listener that accepts but stays silent is given up on after connect_timeout."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="TimeoutError"):
        await open_postgres_ledger(
            f"postgresql://postgres@127.0.0.1:{silent_server}/test", connect_timeout=0.3
        )
    assert time.monotonic() - started < 3


async def test_an_unknown_database_raises_store_unavailable(postgres_dsn: str) -> None:
    """The server answers but the database does not exist (yet): the store is unavailable."""
    dsn = postgres_dsn.rsplit("/", 1)[0] + f"/missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreUnavailable, match="InvalidCatalogName"):
        await open_postgres_ledger(dsn)


@pytest.mark.parametrize(
    ("dsn", "sizes"),
    [
        ("postgresql://postgres@127.0.0.1:notaport/test", (2, 50)),
        ("postgresql://postgres@127.0.0.1:5432/test", (5, 2)),
        ("postgresql://postgres@127.0.0.1:5432/test", (0, 0)),
    ],
)
async def test_a_malformed_dsn_or_pool_size_is_a_config_error(
    dsn: str, sizes: tuple[int, int]
) -> None:
    """Bad ports and impossible pool sizes are configuration errors, found before connecting."""
    with pytest.raises(ConfigError):
        await open_postgres_ledger(dsn, min_size=sizes[0], max_size=sizes[1])


async def test_the_pool_never_holds_more_connections_than_max_size(
    postgres_dsn: str, pg_schema: str
) -> None:
    """min_size connections at open; 40 concurrent calls never push past max_size."""
    name = f"gw-test-{uuid.uuid4().hex[:8]}"
    async with await open_postgres_ledger(
        with_query(pg_schema, application_name=name), min_size=2, max_size=3
    ) as ledger:
        assert await _connections(postgres_dsn, name) >= 2
        pages = await asyncio.gather(*(ledger.entities(EntityQuery()) for _ in range(40)))
        assert len(pages) == 40
        # The pool grows under load (not asserted: it may not need all three) but never past 3.
        assert 2 <= await _connections(postgres_dsn, name) <= 3


async def test_connections_killed_by_the_server_are_replaced(
    postgres_dsn: str, pg_schema: str
) -> None:
    """After the server terminates the pool's connections, a call fails at most with
    StoreUnavailable and the next one succeeds on a fresh connection."""
    name = f"gw-test-{uuid.uuid4().hex[:8]}"
    async with await open_postgres_ledger(
        with_query(pg_schema, application_name=name), min_size=1, max_size=1
    ) as ledger:
        await ledger.check()
        admin = await asyncpg.connect(postgres_dsn)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                name,
            )
        finally:
            await admin.close()
        assert killed == 1
        with contextlib.suppress(StoreUnavailable):
            await ledger.check()
        await ledger.check()
        assert (await ledger.entities(EntityQuery())).items == ()
