"""PostgresIdempotency: the `IdempotencyStore` part of PostgresLedger (Idempotency-Key records).

Atomicity: a claim first tries `INSERT … ON CONFLICT (scope, key) DO NOTHING RETURNING`, one
statement that is the whole claim of a new key; of N concurrent inserts exactly one inserts,
and the rest wait for it to commit and insert nothing. They then decide in one transaction
on the row locked `FOR UPDATE`, so of two claimers finding an expired lease one takes the key
over and the other, once the lock is free, reads the new lease (InProgress). finish, release
and reap are single statements that touch only the rows they are allowed to.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from gateway.errors import StoreConflict
from gateway.model import Claim, Claimed, StoredResponse
from gateway.stores.postgres_base import PostgresBase, canonical_json, utc
from gateway.stores.rules import KeyRecord, check_lease, decide_claim

# A claim retries its insert when the record it collided with was released or reaped before
# it could be read; more than a couple of such races in a row means something is very wrong.
CLAIM_ATTEMPTS = 3


class PostgresIdempotency(PostgresBase):
    """`IdempotencyStore` on PostgreSQL (see the module docstring for atomicity)."""

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
        at = utc(now)
        until = at + lease
        async with self._connection() as conn:
            for _ in range(CLAIM_ATTEMPTS):
                inserted = await conn.fetchval(
                    """
                    INSERT INTO idempotency_keys (scope, key, fingerprint, request_id, state,
                                                  locked_until, created_at)
                    VALUES ($1, $2, $3, $4, 'in_progress', $5, $6)
                    ON CONFLICT (scope, key) DO NOTHING
                    RETURNING true
                    """,
                    scope,
                    key,
                    fingerprint,
                    request_id,
                    until,
                    at,
                )
                if inserted:
                    return Claimed()
                async with conn.transaction():
                    row = await conn.fetchrow(
                        """
                        SELECT fingerprint, request_id, state, locked_until, response_status,
                               response_headers, response_body
                        FROM idempotency_keys WHERE scope = $1 AND key = $2
                        FOR UPDATE
                        """,
                        scope,
                        key,
                    )
                    if row is None:
                        continue  # released or reaped since our insert collided: insert again
                    done = row["state"] == "done"
                    record = KeyRecord(
                        fingerprint=row["fingerprint"],
                        request_id=row["request_id"],
                        done=done,
                        locked_until=row["locked_until"],
                        response=StoredResponse(
                            row["response_status"],
                            json.loads(row["response_headers"]),
                            bytes(row["response_body"]),
                        )
                        if done
                        else None,
                    )
                    decision = decide_claim(record, fingerprint, now=at)
                    if isinstance(decision, Claimed):
                        # The holder's lease ran out (it crashed): this request takes over.
                        await conn.execute(
                            "UPDATE idempotency_keys SET request_id = $3, locked_until = $4"
                            " WHERE scope = $1 AND key = $2",
                            scope,
                            key,
                            request_id,
                            until,
                        )
                    return decision
        raise StoreConflict("idempotency key kept vanishing while being claimed; retry")

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
        utc(now)  # refuses a naive `now`, like every other method
        async with self._connection() as conn:
            # Only the holder, and only once: a repeat (or a taken-over holder) changes nothing.
            await conn.execute(
                """
                UPDATE idempotency_keys
                SET state = 'done', locked_until = NULL, response_status = $4,
                    response_headers = $5::jsonb, response_body = $6, retain_until = $7
                WHERE scope = $1 AND key = $2 AND request_id = $3 AND state = 'in_progress'
                """,
                scope,
                key,
                request_id,
                response.status,
                canonical_json(dict(response.headers)),
                bytes(response.body),
                utc(retain_until),
            )

    async def release(self, scope: str, key: str, *, request_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "DELETE FROM idempotency_keys"
                " WHERE scope = $1 AND key = $2 AND request_id = $3 AND state = 'in_progress'",
                scope,
                key,
                request_id,
            )

    async def hand_back(self, scope: str, key: str, *, request_id: str, previous: str) -> None:
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE idempotency_keys SET request_id = $4"
                " WHERE scope = $1 AND key = $2 AND request_id = $3 AND state = 'in_progress'",
                scope,
                key,
                request_id,
                previous,
            )

    async def reap(self, *, now: datetime) -> int:
        at = utc(now)
        async with self._connection() as conn:
            status: str = await conn.execute(
                "DELETE FROM idempotency_keys WHERE state = 'done' AND retain_until < $1", at
            )
        return int(status.rsplit(" ", 1)[-1])
