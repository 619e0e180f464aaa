"""PostgresAudit: the `AuditStore` part of PostgresLedger (the append-only audit trail).

Atomicity: `record_audit` is one INSERT … SELECT FROM unnest statement (atomic by itself, one
round trip for every entry of the call); reads are one statement each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.model import AuditEntry, AuditPage, AuditRecord
from gateway.stores.postgres_base import PostgresBase, canonical_json, utc

_AUDIT_COLUMNS = (
    "id, action, outcome, job_id, campaign_id, graph_id, reason, detail, actor, created_at"
)


def audit_record(row: Any) -> AuditRecord:
    return AuditRecord(
        id=row["id"],
        action=row["action"],
        outcome=row["outcome"],
        job_id=row["job_id"],
        campaign_id=row["campaign_id"],
        graph_id=row["graph_id"],
        reason=row["reason"],
        detail=json.loads(row["detail"]),
        actor=row["actor"],
        created_at=row["created_at"],
    )


class PostgresAudit(PostgresBase):
    """`AuditStore` on PostgreSQL (see the module docstring for atomicity)."""

    async def record_audit(self, entries: Sequence[AuditEntry], *, now: datetime) -> list[int]:
        at = utc(now)
        if not entries:
            return []
        async with self._connection() as conn:
            rows = await conn.fetch(
                """
                INSERT INTO audit (action, outcome, job_id, campaign_id, graph_id, reason,
                                   detail, actor, created_at)
                SELECT a, o, j, c, g, r, d::jsonb, w, $9
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                            $6::text[], $7::text[], $8::text[])
                     WITH ORDINALITY AS u(a, o, j, c, g, r, d, w, ord)
                ORDER BY ord
                RETURNING id
                """,
                [str(e.action) for e in entries],
                [str(e.outcome) for e in entries],
                [e.job_id for e in entries],
                [e.campaign_id for e in entries],
                [e.graph_id for e in entries],
                [e.reason for e in entries],
                [canonical_json(dict(e.detail)) for e in entries],
                [e.actor for e in entries],
                at,
            )
        # Identity values are drawn in the SELECT's order (ORDER BY ord), so sorting the
        # returned ids gives them in the order the entries were given.
        return sorted(int(r["id"]) for r in rows)

    async def audit(
        self,
        *,
        job_id: str | None = None,
        campaign_id: str | None = None,
        graph_id: str | None = None,
        action: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> AuditPage:
        if limit < 1:
            raise ValueError(f"audit limit must be at least 1, got {limit}")
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("job_id", job_id),
            ("campaign_id", campaign_id),
            ("graph_id", graph_id),
            ("action", action),
        ):
            if value is not None:
                params.append(str(value))
                clauses.append(f"{column} = ${len(params)}")
        if before_id is not None:
            params.append(before_id)
            clauses.append(f"id < ${len(params)}")
        condition = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # One row past the page says whether another page follows.
        params.append(limit + 1)
        rows = await self._fetch(
            f"SELECT {_AUDIT_COLUMNS} FROM audit {condition}"  # noqa: S608 - fixed fragments and placeholders only
            f" ORDER BY id DESC LIMIT ${len(params)}",
            *params,
        )
        items = tuple(audit_record(r) for r in rows[:limit])
        more = len(rows) > limit
        return AuditPage(items=items, next_before_id=items[-1].id if more else None)
