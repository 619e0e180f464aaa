"""Backend-parametrised store fixtures: every contract test runs on SQLite and PostgreSQL.

One object per backend implements every store port (`Ledger`, `JobStore`,
`IdempotencyStore`, `AuditStore`); `job_store`, `idempotency_store` and `audit_store` are the
ledger under test seen through one port, so a suite can only use what its Protocol promises.

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

from gateway.ports import AuditStore, IdempotencyStore, JobStore, Ledger
from gateway.stores.postgres import PostgresLedger, open_postgres_ledger
from gateway.stores.sqlite import SqliteLedger, open_sqlite_ledger
from tests.pgschema import scratch_schema

LEDGER_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

LedgerFactory = Callable[[], Awaitable[Ledger]]
JobStoreFactory = Callable[[], Awaitable[JobStore]]
IdempotencyStoreFactory = Callable[[], Awaitable[IdempotencyStore]]


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


def _both(ledger: Ledger) -> SqliteLedger | PostgresLedger:
    assert isinstance(ledger, SqliteLedger | PostgresLedger)
    return ledger


@pytest.fixture
async def job_store(ledger: Ledger) -> JobStore:
    """The ledger under test through its JobStore port."""
    return _both(ledger)


@pytest.fixture
def job_store_factory(ledger_factory: LedgerFactory) -> JobStoreFactory:
    """Opens more JobStores on the same database (replicas of one deployment)."""

    async def open_one() -> JobStore:
        return _both(await ledger_factory())

    return open_one


@pytest.fixture
async def idempotency_store(ledger: Ledger) -> IdempotencyStore:
    """The ledger under test through its IdempotencyStore port."""
    return _both(ledger)


@pytest.fixture
def idempotency_store_factory(ledger_factory: LedgerFactory) -> IdempotencyStoreFactory:
    """Opens more IdempotencyStores on the same database (replicas of one deployment)."""

    async def open_one() -> IdempotencyStore:
        return _both(await ledger_factory())

    return open_one


@pytest.fixture
async def audit_store(ledger: Ledger) -> AuditStore:
    """The ledger under test through its AuditStore port."""
    return _both(ledger)
