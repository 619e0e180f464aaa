"""SqliteIdempotency: the `IdempotencyStore` part of SqliteLedger (Idempotency-Key records).

Atomicity: each method is one SqliteWriter call (one SAVEPOINT of a group transaction on the
single writer connection), so a claim's read and its insert or take-over happen with no other
write in between: of N concurrent claims of one key, the first in the group inserts the
record and every later one reads it.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta

from gateway.model import Claim, Claimed, StoredResponse
from gateway.stores.rules import KeyRecord, check_lease, decide_claim
from gateway.stores.sqlite_base import SqliteBase, canonical_json, instant, timestamp


class SqliteIdempotency(SqliteBase):
    """`IdempotencyStore` on the ledger file (see the module docstring for atomicity)."""

    async def claim(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        request_id: str,
        now: datetime,
        lease: timedelta,
    ) -> Claim:
        check_lease(lease)
        at = timestamp(now)
        until = timestamp(now + lease)

        def run(conn: sqlite3.Connection) -> Claim:
            row = conn.execute(
                "SELECT fingerprint, request_id, state, locked_until, response_status,"
                " response_headers, response_body FROM idempotency_keys"
                " WHERE scope = ? AND key = ?",
                (scope, key),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, request_id, state,"
                    " locked_until, created_at) VALUES (?, ?, ?, ?, 'in_progress', ?, ?)",
                    (scope, key, fingerprint, request_id, until, at),
                )
                return Claimed()
            done = row[2] == "done"
            record = KeyRecord(
                fingerprint=row[0],
                request_id=row[1],
                done=done,
                locked_until=None if row[3] is None else instant(row[3]),
                response=StoredResponse(row[4], json.loads(row[5]), bytes(row[6]))
                if done
                else None,
            )
            decision = decide_claim(record, fingerprint, now=now)
            if isinstance(decision, Claimed):
                # The holder's lease ran out (it crashed): this request takes the key over.
                conn.execute(
                    "UPDATE idempotency_keys SET request_id = ?, locked_until = ?"
                    " WHERE scope = ? AND key = ? AND state = 'in_progress'",
                    (request_id, until, scope, key),
                )
            return decision

        return await self._writer.submit(run)

    async def finish(
        self,
        scope: str,
        key: str,
        *,
        request_id: str,
        response: StoredResponse,
        now: datetime,
        retain_until: datetime,
    ) -> None:
        timestamp(now)  # refuses a naive `now`, like every other method
        params = (
            response.status,
            canonical_json(dict(response.headers)),
            bytes(response.body),
            timestamp(retain_until),
            scope,
            key,
            request_id,
        )

        def run(conn: sqlite3.Connection) -> None:
            # Only the holder, and only once: a repeat (or a taken-over holder) changes nothing.
            conn.execute(
                "UPDATE idempotency_keys SET state = 'done', locked_until = NULL,"
                " response_status = ?, response_headers = ?, response_body = ?,"
                " retain_until = ?"
                " WHERE scope = ? AND key = ? AND request_id = ? AND state = 'in_progress'",
                params,
            )

        await self._writer.submit(run)

    async def release(self, scope: str, key: str, *, request_id: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM idempotency_keys"
                " WHERE scope = ? AND key = ? AND request_id = ? AND state = 'in_progress'",
                (scope, key, request_id),
            )

        await self._writer.submit(run)

    async def hand_back(self, scope: str, key: str, *, request_id: str, previous: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE idempotency_keys SET request_id = ?"
                " WHERE scope = ? AND key = ? AND request_id = ? AND state = 'in_progress'",
                (previous, scope, key, request_id),
            )

        await self._writer.submit(run)

    async def reap(self, *, now: datetime) -> int:
        at = timestamp(now)

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM idempotency_keys WHERE state = 'done' AND retain_until < ?", (at,)
            )
            return cur.rowcount

        return await self._writer.submit(run)
