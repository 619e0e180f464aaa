"""SqliteLedger: the embedded ledger on one SQLite file in WAL mode. Its JobStore and
IdempotencyStore parts live in sqlite_jobs.py and sqlite_idempotency.py.

Atomicity: every write method is one call of the group-commit writer (sqlite_writer.py): its
SQL runs inside a SAVEPOINT of a group transaction on the single writer connection, and the
method returns only after that transaction committed (fsync'd under synchronous=FULL). Reads
use a second, read-only aiosqlite connection; WAL lets them run while the writer commits, so
reads go on when writes cannot. Driver errors are translated as sqlite_writer.translate says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from gateway.errors import ConfigError, StoreUnavailable
from gateway.model import (
    CreateSource,
    Discovered,
    EntityPage,
    EntityQuery,
    EntityRecord,
    EntityState,
    Intent,
    Outcome,
)
from gateway.stores.closing import AsyncClosing
from gateway.stores.migrate import Migration, apply_sqlite
from gateway.stores.sqlite_audit import SqliteAudit
from gateway.stores.sqlite_base import canonical_json, instant, timestamp
from gateway.stores.sqlite_idempotency import SqliteIdempotency
from gateway.stores.sqlite_jobs import SqliteJobs
from gateway.stores.sqlite_writer import SqliteWriter, WriterStats, translated

T = TypeVar("T")
Synchronous = Literal["FULL", "NORMAL"]

# STRICT tables need 3.37 and RETURNING 3.35; Debian 12's Python has 3.40.
MIN_SQLITE_VERSION = (3, 37, 0)
# How long a write waits for another process's lock on the file (`graph-gateway migrate`, or
# an operator's sqlite3 shell) before failing with StoreUnavailable. Long enough to ride out a
# migration, short enough that a create fails closed well inside a client's timeout.
BUSY_TIMEOUT_MS = 5000
# Rows per multi-row statement: 200 rows of 13 bound values stay far below SQLite's
# 32,766-variable limit (and a batch has at most 50 ops).
ROWS_PER_STATEMENT = 200
# After a checkpoint, truncate the WAL file back to this size, so one burst does not leave a
# large file behind for ever.
JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
CALLER_KEY_NAME = "caller_hmac"
CALLER_KEY_BYTES = 32

_COLUMNS = (
    "id, request_id, op_index, caller, account_id, entity_type, source, state, parent_id, "
    "name, job_id, graph_id, error, created_at, updated_at, slot_no, params"
)
# Multi-row INSERTs; {values} becomes "(?, …), (?, …)", one group per row.
_INSERT_INTENTS = (
    "INSERT INTO entities (request_id, op_index, caller, account_id, entity_type, source, state,"
    " parent_id, name, job_id, slot_no, created_at, updated_at, params) VALUES {values}"
    " RETURNING id, request_id, op_index"
)
_INSERT_DISCOVERED = (
    "INSERT INTO entities (request_id, op_index, caller, account_id, entity_type, source, state,"
    " parent_id, job_id, graph_id, created_at, updated_at) VALUES {values}"
    " ON CONFLICT (request_id, op_index) DO NOTHING"
)


def _record(row: Sequence[Any]) -> EntityRecord:
    return EntityRecord(
        id=row[0],
        request_id=row[1],
        op_index=row[2],
        caller=row[3],
        account_id=row[4],
        entity_type=row[5],
        source=CreateSource(row[6]),
        state=EntityState(row[7]),
        parent_id=row[8],
        name=row[9],
        job_id=row[10],
        graph_id=row[11],
        error=None if row[12] is None else json.loads(row[12]),
        created_at=instant(row[13]),
        updated_at=instant(row[14]),
        slot_no=row[15],
        params=None if row[16] is None else json.loads(row[16]),
    )


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _placeholders(rows: int, columns: int) -> str:
    one = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([one] * rows)


class SqliteLedger(SqliteJobs, SqliteIdempotency, SqliteAudit, AsyncClosing):
    """The `Ledger`, `JobStore` and `IdempotencyStore` on one SQLite file; open it with
    `open_sqlite_ledger`."""

    def __init__(self, path: Path, writer: SqliteWriter, reader: aiosqlite.Connection) -> None:
        super().__init__(writer, reader)
        self.path = path
        self._key: bytes | None = None
        self.synchronous = "?"  # as read back from the writer connection by open_sqlite_ledger

    @property
    def stats(self) -> WriterStats:
        """Write calls and group commits so far (group commit at work: commits < calls)."""
        return self._writer.stats

    # ------------------------------------------------------------------ Ledger: writes

    async def write_intents(self, intents: Sequence[Intent], *, now: datetime) -> list[int]:
        if not intents:
            return []
        at = timestamp(now)
        rows = [
            (
                i.request_id,
                i.op_index,
                i.caller,
                i.account_id,
                i.entity_type,
                CreateSource(i.source).value,
                EntityState.SENDING.value,
                i.parent_id,
                i.name,
                i.job_id,
                i.slot_no,
                at,
                at,
                None if i.params is None else canonical_json(i.params),
            )
            for i in intents
        ]

        def run(conn: sqlite3.Connection) -> list[int]:
            ids: list[int] = []
            for chunk in _chunks(rows, ROWS_PER_STATEMENT):
                sql = _INSERT_INTENTS.format(values=_placeholders(len(chunk), 14))
                got = conn.execute(sql, [v for row in chunk for v in row]).fetchall()
                # RETURNING's row order is not promised; match ids to intents by key.
                by_key = {(r[1], r[2]): int(r[0]) for r in got}
                ids.extend(by_key[(row[0], row[1])] for row in chunk)
            return ids

        return await self._writer.submit(run)

    async def settle(self, outcomes: Sequence[Outcome], *, now: datetime) -> None:
        if not outcomes:
            return
        at = timestamp(now)
        # The last outcome given for a row wins, as if they had been settled one by one.
        latest = {o.entity_id: o for o in outcomes}
        params = [
            (
                EntityState(o.state).value,
                o.graph_id,
                o.entity_type,
                canonical_json(o.error),
                at,
                o.entity_id,
            )
            for o in latest.values()
        ]

        def run(conn: sqlite3.Connection) -> None:
            # An outcome never erases a known graph_id or entity_type (None means "not said");
            # a row already equal to the outcome is left alone, updated_at included.
            conn.executemany(
                """
                UPDATE entities
                SET state = ?1,
                    graph_id = COALESCE(?2, graph_id),
                    entity_type = COALESCE(?3, entity_type),
                    error = ?4,
                    updated_at = ?5
                WHERE id = ?6
                  AND NOT (state = ?1
                           AND graph_id IS COALESCE(?2, graph_id)
                           AND entity_type = COALESCE(?3, entity_type)
                           AND error IS ?4)
                """,
                params,
            )

        await self._writer.submit(run)

    async def add_entities(self, found: Sequence[Discovered], *, now: datetime) -> list[int]:
        if not found:
            return []
        at = timestamp(now)
        rows = [
            (
                d.request_id,
                d.op_index,
                d.caller,
                d.account_id,
                d.entity_type,
                CreateSource(d.source).value,
                EntityState.CREATED.value,
                d.parent_id,
                d.job_id,
                d.graph_id,
                at,
                at,
            )
            for d in found
        ]

        def run(conn: sqlite3.Connection) -> list[int]:
            ids: list[int] = []
            for chunk in _chunks(rows, ROWS_PER_STATEMENT):
                conn.execute(
                    _INSERT_DISCOVERED.format(values=_placeholders(len(chunk), 12)),
                    [v for row in chunk for v in row],
                )
                keys = [(row[0], row[1]) for row in chunk]
                got = conn.execute(
                    "SELECT id, request_id, op_index FROM entities"  # noqa: S608 - placeholders only
                    f" WHERE (request_id, op_index) IN (VALUES {_placeholders(len(keys), 2)})",
                    [v for key in keys for v in key],
                ).fetchall()
                by_key = {(r[1], r[2]): int(r[0]) for r in got}
                ids.extend(by_key[key] for key in keys)
            return ids

        return await self._writer.submit(run)

    async def token_key(self) -> bytes:
        if self._closed:
            raise StoreUnavailable("SQLite ledger unavailable: it is closed")
        if self._key is not None:
            return self._key
        # Made here rather than inside `run`: generating it costs nothing, and if another
        # caller or replica won the race, this candidate is simply dropped.
        candidate = secrets.token_bytes(CALLER_KEY_BYTES)

        def run(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT INTO gateway_keys (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (CALLER_KEY_NAME, candidate),
            )
            got = conn.execute(
                "SELECT value FROM gateway_keys WHERE name = ?", (CALLER_KEY_NAME,)
            ).fetchone()
            return bytes(got[0])

        # Once stored the key never changes, so every later call can use this copy.
        self._key = await self._writer.submit(run)
        return self._key

    # ------------------------------------------------------------------ Ledger: reads

    async def entities(self, query: EntityQuery) -> EntityPage:
        if query.limit < 1:
            raise ValueError(f"EntityQuery.limit must be at least 1, got {query.limit}")
        clauses: list[str] = []
        params: list[Any] = []
        if query.account_id is not None:
            clauses.append("account_id = ?")
            params.append(query.account_id)
        if query.job_id is not None:
            clauses.append("job_id = ?")
            params.append(query.job_id)
        if query.since is not None:
            clauses.append("created_at >= ?")
            params.append(timestamp(query.since))
        if query.state is not None:
            clauses.append("state = ?")
            params.append(EntityState(query.state).value)
        if query.before_id is not None:
            clauses.append("id < ?")
            params.append(query.before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # One row past the page says whether another page follows.
        params.append(query.limit + 1)
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM entities {where} ORDER BY id DESC LIMIT ?",  # noqa: S608 - fixed fragments and placeholders only
            params,
        )
        items = tuple(_record(r) for r in rows[: query.limit])
        more = len(rows) > query.limit
        return EntityPage(items=items, next_before_id=items[-1].id if more else None)

    async def request_entities(self, request_id: str) -> list[EntityRecord]:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM entities WHERE request_id = ? ORDER BY op_index",  # noqa: S608 - fixed column list
            (request_id,),
        )
        return [_record(r) for r in rows]

    async def count_live(self, parent_ids: Sequence[str], entity_type: str) -> int:
        if not parent_ids:
            return 0
        marks = ",".join("?" for _ in parent_ids)
        rows = await self._read(
            "SELECT count(*) FROM entities WHERE entity_type = ? AND state IN "  # noqa: S608 - placeholders only
            f"('sending', 'unknown', 'created') AND parent_id IN ({marks})",
            (entity_type, *parent_ids),
        )
        return int(rows[0][0])

    async def find_by_graph_id(self, graph_id: str) -> EntityRecord | None:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM entities WHERE graph_id = ? ORDER BY id DESC LIMIT 1",  # noqa: S608 - fixed column list
            (graph_id,),
        )
        return _record(rows[0]) if rows else None

    async def check(self) -> None:
        if not self._writer.alive:
            raise StoreUnavailable("SQLite ledger unavailable: its writer has stopped")
        # Reads a page of the file, so a vanished or corrupt database shows here too.
        await self._read("SELECT count(*) FROM schema_migrations", ())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._writer.aclose()
        finally:
            await _close_quietly(self._reader)


async def _close_quietly(conn: aiosqlite.Connection) -> None:
    # Closing is best effort: the file is consistent whatever happens here.
    with contextlib.suppress(sqlite3.Error, ValueError):
        await conn.close()


def _probe(path: Path) -> None:
    """Open *path* once with plain sqlite3 and read its header.

    aiosqlite's failure path for a connect that fails (no such directory, not a database)
    leaves its worker thread to post to the event loop later, possibly after the loop is
    closed; probing first keeps every such failure out of aiosqlite.
    """
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    finally:
        conn.close()


async def _connect(path: Path, *, busy_timeout_ms: int, read_only: bool) -> aiosqlite.Connection:
    await asyncio.to_thread(_probe, path)
    # isolation_level=None: the sqlite3 module issues no BEGIN of its own; the migration
    # runner says exactly where each transaction starts and ends.
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if read_only:
            await conn.execute("PRAGMA query_only = ON")
        else:
            # Persistent: recorded in the file, so every later connection is in WAL mode too.
            mode = list(await conn.execute_fetchall("PRAGMA journal_mode = WAL"))
            if not mode or str(mode[0][0]).lower() != "wal":
                raise StoreUnavailable(f"SQLite ledger unavailable: {path} refuses WAL mode")
    except BaseException:
        await _close_quietly(conn)
        raise
    return conn


def _writer_pragmas(synchronous: Synchronous, busy_timeout_ms: int) -> list[str]:
    return [
        f"PRAGMA busy_timeout = {int(busy_timeout_ms)}",
        "PRAGMA foreign_keys = ON",
        f"PRAGMA synchronous = {synchronous}",
        f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}",
    ]


async def migrate_sqlite(path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> list[Migration]:
    """Apply pending migrations to the file at *path* (made WAL); return those applied."""
    with translated():
        conn = await _connect(path, busy_timeout_ms=busy_timeout_ms, read_only=False)
        try:
            return await apply_sqlite(conn)
        finally:
            await _close_quietly(conn)


async def open_sqlite_ledger(
    path: Path, *, synchronous: Synchronous = "FULL", busy_timeout_ms: int = BUSY_TIMEOUT_MS
) -> SqliteLedger:
    """Open (creating if needed) the ledger file at *path* and apply pending migrations.

    synchronous=FULL (the default) fsyncs the WAL at every commit, so an intent survives a
    power cut or kernel crash, not only a `kill -9` (DESIGN.md §2.3 says "durably recorded");
    group commit pays that fsync once per group. NORMAL skips it and is for benchmarks and
    throw-away databases. *busy_timeout_ms* bounds the wait for another process's write lock
    (`graph-gateway migrate`, an operator's sqlite3 shell) before a write fails.
    Raises StoreUnavailable if the file cannot be opened or written.
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        raise ConfigError(
            [f"SQLite {sqlite3.sqlite_version} is too old for the ledger; it needs 3.37 or later"]
        )
    if synchronous not in ("FULL", "NORMAL"):
        raise ConfigError([f"SQLite synchronous must be FULL or NORMAL, got {synchronous!r}"])
    await migrate_sqlite(path, busy_timeout_ms=busy_timeout_ms)
    with translated():
        writer = await SqliteWriter.open(path, _writer_pragmas(synchronous, busy_timeout_ms))
        try:
            (level,) = (await writer.query("PRAGMA synchronous"))[0]
            reader = await _connect(path, busy_timeout_ms=busy_timeout_ms, read_only=True)
        except BaseException:
            await writer.aclose()
            raise
    ledger = SqliteLedger(path, writer, reader)
    ledger.synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(int(level), "?")
    return ledger
