"""What the SQLite stores share: the writer and reader connections, and value encoding.

SqliteLedger is assembled from SqliteBase subclasses (sqlite.py, sqlite_jobs.py,
sqlite_idempotency.py); each write is one SqliteWriter call, each read one reader query.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from gateway.errors import StoreUnavailable
from gateway.stores.sqlite_writer import SqliteWriter, translated


def timestamp(at: datetime) -> str:
    """*at* as the 27-character UTC text the schema stores (see 0001's header)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"ledger timestamps must be timezone-aware, got {at!r}")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def instant(text: str) -> datetime:
    """The aware UTC datetime a stored timestamp names."""
    return datetime.fromisoformat(text)


def canonical_json(value: Mapping[str, Any] | None) -> str | None:
    """Sorted keys, no spaces: the same mapping always gives the same text (so it compares)."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class SqliteBase:
    """The connections of one ledger file; subclasses add the port methods."""

    def __init__(self, writer: SqliteWriter, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._closed = False

    async def _read(self, sql: str, params: Iterable[Any]) -> list[Any]:
        if self._closed:
            raise StoreUnavailable("SQLite ledger unavailable: it is closed")
        with translated():
            return list(await self._reader.execute_fetchall(sql, params))
