"""What the PostgreSQL stores share: the pool, the asyncpg error translation, value encoding.

PostgresLedger is assembled from PostgresBase subclasses (postgres.py, postgres_jobs.py,
postgres_idempotency.py). The translation, applied to everything that runs on a pooled
connection:

    UniqueViolationError                                   -> StoreConflict
    SerializationError, DeadlockDetectedError              -> StoreConflict (retry the call)
    other IntegrityConstraintViolationError (CHECK, ...),
    DataError                                              -> ValueError (a row the schema refuses)
    PostgresConnectionError, InterfaceError, OSError, TimeoutError, server shutting down,
    too many connections, disk full, read-only (failover),
    unknown database, login refused, permission denied     -> StoreUnavailable
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.errors import StoreConflict, StoreUnavailable

# Waiting for a free pooled connection. Past this the pool is saturated (or the server gone)
# and the create fails closed rather than piling up behind it.
ACQUIRE_TIMEOUT_SECONDS = 10.0

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, canceled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby after failover
    asyncpg.exceptions.InternalClientError,
    # The server answers but will not let us in or write: a database not created yet, a
    # rotated password, a revoked grant. Creates must fail closed all the same.
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InsufficientPrivilegeError,
    ConnectionError,
    OSError,
    TimeoutError,
)


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise asyncpg exceptions as gateway errors (the table in the module docstring)."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise StoreConflict(f"ledger row already exists: {exc}") from exc
    except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError) as exc:
        raise StoreConflict(f"ledger transaction conflicted, retry it: {exc}") from exc
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        raise ValueError(f"the ledger refused a row: {exc}") from exc
    except _UNAVAILABLE as exc:
        if isinstance(exc, ValueError):
            # asyncpg's client-side DataError / ClientConfigurationError: a value it cannot
            # encode or a malformed DSN is a bug or a configuration error, not an outage.
            raise
        raise StoreUnavailable(
            f"PostgreSQL ledger unavailable: {type(exc).__name__}: {exc}"
        ) from exc


def utc(at: datetime) -> datetime:
    """*at* in UTC; ValueError for a naive datetime."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"ledger timestamps must be timezone-aware, got {at!r}")
    return at.astimezone(UTC)


def canonical_json(value: Mapping[str, Any] | None) -> str | None:
    """Sorted keys, no spaces: jsonb travels as text (see postgres._init_connection)."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class PostgresBase:
    """The pool of one ledger database; subclasses add the port methods."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._closed = False

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection, errors translated. One statement on it is one transaction."""
        if self._closed:
            raise StoreUnavailable("PostgreSQL ledger unavailable: it is closed")
        with translated():
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
                yield conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """A pooled connection inside BEGIN … COMMIT, for methods of several statements."""
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _fetch(self, sql: str, *params: Any) -> list[Any]:
        async with self._connection() as conn:
            return list(await conn.fetch(sql, *params))
