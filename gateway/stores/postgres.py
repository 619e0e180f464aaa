"""PostgresLedger: the production ledger on an asyncpg pool. Translates asyncpg errors at its edge
(the table is in postgres_base.py); the JobStore and IdempotencyStore parts live in
postgres_jobs.py and postgres_idempotency.py.

Atomicity: every method is one statement (atomic by itself: no BEGIN/COMMIT round trips on
the create path) or one transaction on one pooled connection.
Multi-row writes pass arrays and `unnest` them (one round trip for 50 rows); `add_entities`
and `token_key` are idempotent through `INSERT … ON CONFLICT DO NOTHING`, which waits for a
concurrent inserter of the same key and then sees its row (READ COMMITTED).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from gateway.errors import ConfigError, GatewayError, StoreUnavailable
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
from gateway.stores.migrate import Migration, apply_postgres
from gateway.stores.postgres_audit import PostgresAudit
from gateway.stores.postgres_base import canonical_json, translated, utc
from gateway.stores.postgres_idempotency import PostgresIdempotency
from gateway.stores.postgres_jobs import PostgresJobs

# Opening one connection: a server that is down refuses at once; one that is unreachable
# (packets dropped) is given up on after this, so start-up and /readyz fail fast.
CONNECT_TIMEOUT_SECONDS = 3.0
# One statement; ledger statements touch a handful of rows by index, so this only fires when
# the server is stuck (lock pile-up, I/O stall).
COMMAND_TIMEOUT_SECONDS = 10.0
# /readyz must answer quickly even when the database does not.
CHECK_TIMEOUT_SECONDS = 2.0
CLOSE_TIMEOUT_SECONDS = 5.0
APPLICATION_NAME = "graph-gateway"
CALLER_KEY_NAME = "caller_hmac"
CALLER_KEY_BYTES = 32

_COLUMNS = (
    "id, request_id, op_index, caller, account_id, entity_type, source, state, parent_id, "
    "name, job_id, graph_id, error, created_at, updated_at, slot_no, params"
)


def _record(row: Any) -> EntityRecord:
    error = row["error"]
    return EntityRecord(
        id=row["id"],
        request_id=row["request_id"],
        op_index=row["op_index"],
        caller=row["caller"],
        account_id=row["account_id"],
        entity_type=row["entity_type"],
        source=CreateSource(row["source"]),
        state=EntityState(row["state"]),
        parent_id=row["parent_id"],
        name=row["name"],
        job_id=row["job_id"],
        graph_id=row["graph_id"],
        error=None if error is None else json.loads(error),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        slot_no=row["slot_no"],
        params=None if row["params"] is None else json.loads(row["params"]),
    )


class PostgresLedger(PostgresJobs, PostgresIdempotency, PostgresAudit, AsyncClosing):
    """The `Ledger`, `JobStore` and `IdempotencyStore` on PostgreSQL; open it with
    `open_postgres_ledger`."""

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self._key: bytes | None = None

    async def write_intents(self, intents: Sequence[Intent], *, now: datetime) -> list[int]:
        if not intents:
            return []
        at = utc(now)
        # One statement: atomic without BEGIN/COMMIT, which would cost two round trips.
        async with self._connection() as conn:
            rows = await conn.fetch(
                """
                INSERT INTO entities (request_id, op_index, caller, account_id, entity_type,
                                      source, state, parent_id, name, job_id, slot_no,
                                      created_at, updated_at, params)
                SELECT r, o, c, a, t, s, 'sending', p, n, j, sn, $10, $10, pa::jsonb
                FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[],
                            $6::text[], $7::text[], $8::text[], $9::text[], $11::int[],
                            $12::text[])
                     WITH ORDINALITY AS u(r, o, c, a, t, s, p, n, j, sn, pa, ord)
                ORDER BY ord
                RETURNING id, request_id, op_index
                """,
                [i.request_id for i in intents],
                [i.op_index for i in intents],
                [i.caller for i in intents],
                [i.account_id for i in intents],
                [i.entity_type for i in intents],
                [CreateSource(i.source).value for i in intents],
                [i.parent_id for i in intents],
                [i.name for i in intents],
                [i.job_id for i in intents],
                at,
                [i.slot_no for i in intents],
                [None if i.params is None else canonical_json(i.params) for i in intents],
            )
        # RETURNING's row order is not promised; match ids to intents by key.
        by_key = {(r["request_id"], r["op_index"]): int(r["id"]) for r in rows}
        return [by_key[(i.request_id, i.op_index)] for i in intents]

    async def settle(self, outcomes: Sequence[Outcome], *, now: datetime) -> None:
        if not outcomes:
            return
        at = utc(now)
        # The last outcome given for a row wins, as if they had been settled one by one.
        latest = sorted({o.entity_id: o for o in outcomes}.items())
        # One statement: atomic without BEGIN/COMMIT, which would cost two round trips.
        async with self._connection() as conn:
            # An outcome never erases a known graph_id or entity_type (NULL means "not said");
            # a row already equal to the outcome is left alone, updated_at included.
            await conn.execute(
                """
                UPDATE entities AS e
                SET state = o.state,
                    graph_id = COALESCE(o.graph_id, e.graph_id),
                    entity_type = COALESCE(o.entity_type, e.entity_type),
                    error = o.error,
                    updated_at = $6
                FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::jsonb[])
                     AS o(id, state, graph_id, entity_type, error)
                WHERE e.id = o.id
                  AND (e.state, e.graph_id, e.entity_type, e.error) IS DISTINCT FROM
                      (o.state, COALESCE(o.graph_id, e.graph_id),
                       COALESCE(o.entity_type, e.entity_type), o.error)
                """,
                [entity_id for entity_id, _ in latest],
                [EntityState(o.state).value for _, o in latest],
                [o.graph_id for _, o in latest],
                [o.entity_type for _, o in latest],
                [canonical_json(o.error) for _, o in latest],
                at,
            )

    async def add_entities(self, found: Sequence[Discovered], *, now: datetime) -> list[int]:
        if not found:
            return []
        at = utc(now)
        keys = [(d.request_id, d.op_index) for d in found]
        async with self._transaction() as conn:
            inserted = await conn.fetch(
                """
                INSERT INTO entities (request_id, op_index, caller, account_id, entity_type,
                                      source, state, parent_id, job_id, graph_id,
                                      created_at, updated_at)
                SELECT r, o, c, a, t, s, 'created', p, j, g, $9, $9
                FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[],
                            $6::text[], $7::text[], $8::text[], $10::text[])
                     WITH ORDINALITY AS u(r, o, c, a, t, p, j, g, s, ord)
                ORDER BY ord
                ON CONFLICT (request_id, op_index) DO NOTHING
                RETURNING id, request_id, op_index
                """,
                [d.request_id for d in found],
                [d.op_index for d in found],
                [d.caller for d in found],
                [d.account_id for d in found],
                [d.entity_type for d in found],
                [d.parent_id for d in found],
                [d.job_id for d in found],
                [d.graph_id for d in found],
                at,
                [CreateSource(d.source).value for d in found],
            )
            by_key = {(r["request_id"], r["op_index"]): int(r["id"]) for r in inserted}
            missing = [key for key in dict.fromkeys(keys) if key not in by_key]
            if missing:
                # Rows that were there already (or that a concurrent call committed while this
                # INSERT waited on it): a new statement sees them under READ COMMITTED.
                existing = await conn.fetch(
                    """
                    SELECT e.id, e.request_id, e.op_index
                    FROM entities AS e
                    JOIN unnest($1::text[], $2::int[]) AS k(r, o)
                      ON e.request_id = k.r AND e.op_index = k.o
                    """,
                    [r for r, _ in missing],
                    [o for _, o in missing],
                )
                by_key.update({(r["request_id"], r["op_index"]): int(r["id"]) for r in existing})
        return [by_key[key] for key in keys]

    async def token_key(self) -> bytes:
        if self._closed:
            raise StoreUnavailable("PostgreSQL ledger unavailable: it is closed")
        if self._key is not None:
            return self._key
        candidate = secrets.token_bytes(CALLER_KEY_BYTES)
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO gateway_keys (name, value) VALUES ($1, $2)"
                " ON CONFLICT (name) DO NOTHING",
                CALLER_KEY_NAME,
                candidate,
            )
            value = await conn.fetchval(
                "SELECT value FROM gateway_keys WHERE name = $1", CALLER_KEY_NAME
            )
        # Once stored the key never changes, so every later call can use this copy.
        self._key = bytes(value)
        return self._key

    async def entities(self, query: EntityQuery) -> EntityPage:
        if query.limit < 1:
            raise ValueError(f"EntityQuery.limit must be at least 1, got {query.limit}")
        clauses: list[str] = []
        params: list[Any] = []

        def where(clause: str, value: Any) -> None:
            params.append(value)
            clauses.append(clause.format(f"${len(params)}"))

        if query.account_id is not None:
            where("account_id = {}", query.account_id)
        if query.job_id is not None:
            where("job_id = {}", query.job_id)
        if query.since is not None:
            where("created_at >= {}", utc(query.since))
        if query.state is not None:
            where("state = {}", EntityState(query.state).value)
        if query.before_id is not None:
            where("id < {}", query.before_id)
        condition = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # One row past the page says whether another page follows.
        params.append(query.limit + 1)
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM entities {condition}"  # noqa: S608 - fixed fragments and placeholders only
            f" ORDER BY id DESC LIMIT ${len(params)}",
            *params,
        )
        items = tuple(_record(r) for r in rows[: query.limit])
        more = len(rows) > query.limit
        return EntityPage(items=items, next_before_id=items[-1].id if more else None)

    async def request_entities(self, request_id: str) -> list[EntityRecord]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM entities WHERE request_id = $1 ORDER BY op_index",  # noqa: S608 - fixed column list
            request_id,
        )
        return [_record(r) for r in rows]

    async def count_live(self, parent_ids: Sequence[str], entity_type: str) -> int:
        if not parent_ids:
            return 0
        rows = await self._fetch(
            "SELECT count(*) FROM entities WHERE entity_type = $1 AND state IN "
            "('sending', 'unknown', 'created') AND parent_id = ANY($2::text[])",
            entity_type,
            list(parent_ids),
        )
        return int(rows[0][0])

    async def find_by_graph_id(self, graph_id: str) -> EntityRecord | None:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM entities WHERE graph_id = $1 ORDER BY id DESC LIMIT 1",  # noqa: S608 - fixed column list
            graph_id,
        )
        return _record(rows[0]) if rows else None

    async def check(self) -> None:
        if self._closed:
            raise StoreUnavailable("PostgreSQL ledger unavailable: it is closed")
        with translated():
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await self._pool.fetchval("SELECT 1")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._pool.close()
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            # Connections still busy (or a server gone) past the grace period: drop them.
            self._pool.terminate()


async def _init_connection(conn: Any) -> None:
    # jsonb travels as text both ways; canonical_json and the record builders do the encoding.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=lambda v: v, decoder=lambda v: v, format="text"
    )


def _server_settings(dsn: str) -> dict[str, str]:
    # A DSN's own application_name (asyncpg passes unknown query parameters to the server)
    # wins over ours, so an operator or a test can tell the connections apart.
    query = parse_qs(urlsplit(dsn).query)
    return {} if "application_name" in query else {"application_name": APPLICATION_NAME}


async def open_postgres_ledger(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 50,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> PostgresLedger:
    """Open a pool on *dsn* and apply pending migrations (to the search_path's first schema).

    Raises StoreUnavailable within a few seconds if the server cannot be reached, and
    ConfigError if the DSN or the sizes are malformed.
    """
    if max_size < 1 or not 0 <= min_size <= max_size:
        raise ConfigError(
            [f"ledger pool: need 0 <= min_size <= max_size >= 1, got {min_size}/{max_size}"]
        )
    pool: Any = None
    try:
        with translated():
            # Each connection attempt has its own timeout; this bounds the whole open,
            # migrations included, in case a server accepts but never answers.
            async with asyncio.timeout(connect_timeout + COMMAND_TIMEOUT_SECONDS):
                pool = await asyncpg.create_pool(
                    dsn,
                    min_size=min_size,
                    max_size=max_size,
                    timeout=connect_timeout,
                    command_timeout=COMMAND_TIMEOUT_SECONDS,
                    init=_init_connection,
                    server_settings=_server_settings(dsn),
                )
                async with pool.acquire() as conn:
                    await apply_postgres(conn)
    except BaseException as exc:
        if pool is not None:
            pool.terminate()
        if isinstance(exc, ValueError) and not isinstance(exc, GatewayError):
            raise ConfigError([f"ledger database: {exc}"]) from exc
        raise
    return PostgresLedger(pool)


async def migrate_postgres(dsn: str) -> list[Migration]:
    """Apply pending migrations on one connection to *dsn*; return those applied."""
    with translated():
        conn = await asyncpg.connect(
            dsn, timeout=CONNECT_TIMEOUT_SECONDS, server_settings=_server_settings(dsn)
        )
        try:
            return await apply_postgres(conn)
        finally:
            await conn.close()
