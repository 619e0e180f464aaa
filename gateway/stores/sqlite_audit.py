"""SqliteAudit: the `AuditStore` part of SqliteLedger (the append-only audit trail).

Atomicity: `record_audit` is one SqliteWriter call (one SAVEPOINT of a group transaction on
the single writer connection): every entry of a call is written, or none. Reads use the
read-only connection.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.model import AuditEntry, AuditPage, AuditRecord
from gateway.stores.sqlite_base import SqliteBase, canonical_json, instant, timestamp

_AUDIT_COLUMNS = (
    "id, action, outcome, job_id, campaign_id, graph_id, reason, detail, actor, created_at"
)
_INSERT = (
    "INSERT INTO audit (action, outcome, job_id, campaign_id, graph_id, reason, detail, actor,"
    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
)


def audit_record(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(
        id=row[0],
        action=row[1],
        outcome=row[2],
        job_id=row[3],
        campaign_id=row[4],
        graph_id=row[5],
        reason=row[6],
        detail=json.loads(row[7]),
        actor=row[8],
        created_at=instant(row[9]),
    )


class SqliteAudit(SqliteBase):
    """`AuditStore` on the ledger file (see the module docstring for atomicity)."""

    async def record_audit(self, entries: Sequence[AuditEntry], *, now: datetime) -> list[int]:
        at = timestamp(now)
        rows = [
            (
                str(e.action),
                str(e.outcome),
                e.job_id,
                e.campaign_id,
                e.graph_id,
                e.reason,
                canonical_json(dict(e.detail)),
                e.actor,
                at,
            )
            for e in entries
        ]
        if not rows:
            return []

        def run(conn: sqlite3.Connection) -> list[int]:
            # One statement per row: RETURNING's order over a multi-row INSERT is not promised,
            # and ids must come back in the order given. An audit call writes a few dozen rows.
            return [int(conn.execute(_INSERT, row).fetchall()[0][0]) for row in rows]

        return await self._writer.submit(run)

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
                clauses.append(f"{column} = ?")
                params.append(str(value))
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # One row past the page says whether another page follows.
        params.append(limit + 1)
        rows = await self._read(
            f"SELECT {_AUDIT_COLUMNS} FROM audit {where} ORDER BY id DESC LIMIT ?",  # noqa: S608 - fixed fragments and placeholders only
            params,
        )
        items = tuple(audit_record(r) for r in rows[:limit])
        more = len(rows) > limit
        return AuditPage(items=items, next_before_id=items[-1].id if more else None)
