"""Backend-parametrised ledger fixtures: every contract test runs on SQLite and PostgreSQL.

Isolation: SQLite gets a fresh file in `tmp_path` per test; PostgreSQL gets a fresh schema per
test in the `test` database, named in the DSN's `search_path` (asyncpg passes unknown query
parameters to the server), so migrations run from scratch each time and nothing leaks between
tests, even when they run in parallel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from gateway.ports import Ledger
from gateway.stores.postgres import open_postgres_ledger
from gateway.stores.sqlite import open_sqlite_ledger
from tests.pgschema import scratch_schema

LEDGER_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

LedgerFactory = Callable[[], Awaitable[Ledger]]


@pytest.fixture
async def pg_schema(postgres_dsn: str) -> AsyncIterator[str]:
    """A DSN whose search_path is a brand-new, empty schema, dropped after the test."""
    async with scratch_schema(postgres_dsn) as dsn:
        yield dsn


@pytest.fixture(params=LEDGER_BACKENDS)
async def ledger_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[LedgerFactory]:
    """Opens ledgers on one database of the backend under test (all closed after the test)."""
    opened: list[Ledger] = []
    stack = AsyncExitStack()
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"

        async def open_one() -> Ledger:
            ledger = await open_sqlite_ledger(path)
            opened.append(ledger)
            return ledger

    else:
        # postgres_dsn is looked up here, not declared, so the sqlite leg never needs it.
        dsn = await stack.enter_async_context(
            scratch_schema(request.getfixturevalue("postgres_dsn"))
        )

        async def open_one() -> Ledger:
            ledger = await open_postgres_ledger(dsn, min_size=1, max_size=10)
            opened.append(ledger)
            return ledger

    async with stack:
        yield open_one
        for ledger in opened:
            await ledger.aclose()


@pytest.fixture
async def ledger(ledger_factory: LedgerFactory) -> Ledger:
    """A migrated, empty ledger of the backend under test."""
    return await ledger_factory()
