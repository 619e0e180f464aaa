"""SqliteJobs: the `JobStore` part of SqliteLedger (jobs, slots, pre-creation verifications).

Atomicity: each write method is one SqliteWriter call, i.e. one SAVEPOINT of a group
transaction on the single writer connection. The calls of a group run one after another on
that connection, so each one reads every slot change the calls before it made, committed or
not yet: two reservations can never take the same slot, and none needs a lock of its own.
A call that fails is rolled back to its savepoint alone (all its wants, never half of them).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.model import (
    ENDING_JOB_STATES,
    AlreadyCreated,
    CheckResult,
    DueNotification,
    JobPage,
    JobQuery,
    JobRecord,
    JobSpec,
    JobStatus,
    NoCapacity,
    Reservation,
    Reserved,
    SlotBusy,
    SlotOutcome,
    SlotRecord,
    SlotState,
    SlotWant,
)
from gateway.stores.rules import MAX_SLOTS_PER_JOB, check_outcome, slot_counts
from gateway.stores.sqlite_base import SqliteBase, canonical_json, instant, timestamp

_JOB_COLUMNS = (
    "job_id, caller, account_id, campaign_name, external_ref, expect, status, verification,"
    " created_at, updated_at"
)
_SLOT_COLUMNS = "job_id, entity_type, slot_no, state, request_id, graph_id, updated_at"
_SELECT_JOB = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?"  # noqa: S608 - fixed columns
# The lowest free slot of a type, taken in the same statement that finds it.
_TAKE_LOWEST_FREE = """
    UPDATE slots SET state = 'reserved', request_id = ?4, updated_at = ?3
    WHERE job_id = ?1 AND entity_type = ?2 AND slot_no = (
        SELECT min(slot_no) FROM slots
        WHERE job_id = ?1 AND entity_type = ?2 AND state = 'free'
    )
    RETURNING slot_no
"""
# One SlotOutcome, applied only if its request holds the slot (reserved or unknown); UNKNOWN
# on a slot already unknown changes nothing.
_APPLY_OUTCOME = """
    UPDATE slots
    SET state = ?5,
        request_id = CASE WHEN ?5 = 'free' THEN NULL ELSE request_id END,
        graph_id = CASE WHEN ?5 = 'created' THEN ?6 END,
        updated_at = ?7
    WHERE job_id = ?1 AND entity_type = ?2 AND slot_no = ?3 AND request_id = ?4
      AND state IN ('reserved', 'unknown') AND state <> ?5
    RETURNING state
"""
# Recovery: a held slot becomes created (?4 = its graph id) or free (?4 NULL).
_RESOLVE = """
    UPDATE slots
    SET state = CASE WHEN ?4 IS NULL THEN 'free' ELSE 'created' END,
        request_id = CASE WHEN ?4 IS NULL THEN NULL ELSE request_id END,
        graph_id = ?4,
        updated_at = ?5
    WHERE job_id = ?1 AND entity_type = ?2 AND slot_no = ?3
      AND state IN ('reserved', 'unknown')
    RETURNING state
"""
# Every slot CREATED: the job is done. Failed and rolled-back jobs stay as they are.
_COMPLETE_IF_DONE = """
    UPDATE jobs SET status = 'completed', updated_at = ?2
    WHERE job_id = ?1 AND status IN ('pending', 'in_progress')
      AND NOT EXISTS (SELECT 1 FROM slots WHERE job_id = ?1 AND state <> 'created')
"""


def job_record(row: Sequence[Any]) -> JobRecord:
    return JobRecord(
        job_id=row[0],
        caller=row[1],
        account_id=row[2],
        campaign_name=row[3],
        external_ref=row[4],
        expect=json.loads(row[5]),
        status=JobStatus(row[6]),
        verification=json.loads(row[7]),
        created_at=instant(row[8]),
        updated_at=instant(row[9]),
    )


def slot_record(row: Sequence[Any]) -> SlotRecord:
    return SlotRecord(
        job_id=row[0],
        entity_type=row[1],
        slot_no=row[2],
        state=SlotState(row[3]),
        request_id=row[4],
        graph_id=row[5],
        updated_at=instant(row[6]),
    )


def _no_capacity(conn: sqlite3.Connection, job_id: str, entity_type: str) -> NoCapacity:
    expected, created, in_flight = conn.execute(
        """
        SELECT count(*), coalesce(sum(state = 'created'), 0),
               coalesce(sum(state IN ('reserved', 'unknown')), 0)
        FROM slots WHERE job_id = ? AND entity_type = ?
        """,
        (job_id, entity_type),
    ).fetchone()
    return NoCapacity(entity_type, expected=expected, created=created, in_flight=in_flight)


def _reserve_one(
    conn: sqlite3.Connection, job_id: str, want: SlotWant, request_id: str, at: str
) -> Reservation:
    if want.slot_no is None:
        # fetchall: a RETURNING statement is stepped to its end, never left open.
        params = (job_id, want.entity_type, at, request_id)
        taken = conn.execute(_TAKE_LOWEST_FREE, params).fetchall()
        if taken:
            return Reserved(taken[0][0])
        return _no_capacity(conn, job_id, want.entity_type)
    if not 1 <= want.slot_no <= MAX_SLOTS_PER_JOB:
        return _no_capacity(conn, job_id, want.entity_type)
    key = (job_id, want.entity_type, want.slot_no)
    row = conn.execute(
        "SELECT state, request_id, graph_id FROM slots"
        " WHERE job_id = ? AND entity_type = ? AND slot_no = ?",
        key,
    ).fetchone()
    if row is None:
        return _no_capacity(conn, job_id, want.entity_type)
    state = SlotState(row[0])
    if state is SlotState.CREATED:
        return AlreadyCreated(want.slot_no, row[2])
    if state is not SlotState.FREE:
        return SlotBusy(want.slot_no, row[1])
    conn.execute(
        "UPDATE slots SET state = 'reserved', request_id = ?, updated_at = ?"
        " WHERE job_id = ? AND entity_type = ? AND slot_no = ?",
        (request_id, at, *key),
    )
    return Reserved(want.slot_no)


class SqliteJobs(SqliteBase):
    """`JobStore` on the ledger file (see the module docstring for atomicity)."""

    async def create_job(
        self, spec: JobSpec, *, job_id: str, verification: Mapping[str, Any], now: datetime
    ) -> tuple[JobRecord, bool]:
        at = timestamp(now)
        counts = slot_counts(spec.expect)
        job_row = (
            job_id,
            spec.caller,
            spec.account_id,
            spec.campaign_name,
            spec.external_ref,
            canonical_json(dict(spec.expect)),
            JobStatus.PENDING.value,
            canonical_json(verification),
            at,
            at,
        )
        slot_rows = [(job_id, t, n, at) for t, count in counts for n in range(1, count + 1)]

        def run(conn: sqlite3.Connection) -> tuple[JobRecord, bool]:
            if spec.external_ref is not None:
                existing = conn.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE caller = ? AND external_ref = ?",  # noqa: S608 - fixed columns
                    (spec.caller, spec.external_ref),
                ).fetchone()
                if existing is not None:
                    return job_record(existing), False
            conn.execute(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed columns
                job_row,
            )
            conn.executemany(
                "INSERT INTO slots (job_id, entity_type, slot_no, state, updated_at)"
                " VALUES (?, ?, ?, 'free', ?)",
                slot_rows,
            )
            if spec.notify_url is not None:
                conn.execute(
                    "INSERT INTO job_notifications (job_id, url, updated_at) VALUES (?, ?, ?)",
                    (job_id, spec.notify_url, at),
                )
            return job_record(conn.execute(_SELECT_JOB, (job_id,)).fetchone()), True

        return await self._writer.submit(run)

    async def job(self, job_id: str) -> JobRecord | None:
        rows = await self._read(_SELECT_JOB, (job_id,))
        return job_record(rows[0]) if rows else None

    async def due_notifications(self, *, max_tries: int, limit: int = 100) -> list[DueNotification]:
        columns = ", ".join(f"j.{c.strip()}" for c in _JOB_COLUMNS.split(","))
        ending = ", ".join("?" for _ in ENDING_JOB_STATES)
        rows = await self._read(
            f"SELECT {columns}, n.url, CASE WHEN n.try_status = j.status THEN n.tries ELSE 0 END"  # noqa: S608 - fixed columns
            " FROM job_notifications n JOIN jobs j ON j.job_id = n.job_id"
            f" WHERE j.status IN ({ending}) AND n.sent_status IS NOT j.status"
            " AND NOT (n.try_status IS j.status AND n.tries >= ?)"
            " ORDER BY j.updated_at LIMIT ?",
            (*ENDING_JOB_STATES, max_tries, limit),
        )
        return [DueNotification(job_record(r[:-2]), r[-2], r[-1]) for r in rows]

    async def notification_done(
        self, job_id: str, status: str, *, ok: bool, error: str | None, now: datetime
    ) -> None:
        at = timestamp(now)

        def run(conn: sqlite3.Connection) -> None:
            if ok:
                conn.execute(
                    "UPDATE job_notifications SET sent_status = ?, try_status = NULL, tries = 0,"
                    " last_error = NULL, updated_at = ? WHERE job_id = ?",
                    (status, at, job_id),
                )
                return
            conn.execute(
                "UPDATE job_notifications SET"
                " tries = CASE WHEN try_status IS ? THEN tries + 1 ELSE 1 END,"
                " try_status = ?, last_error = ?, updated_at = ? WHERE job_id = ?",
                (status, status, (error or "")[:500], at, job_id),
            )

        await self._writer.submit(run)

    async def list_jobs(self, query: JobQuery) -> JobPage:
        if query.limit < 1:
            raise ValueError(f"limit must be >= 1, got {query.limit}")
        where, params = [], []
        if query.status is not None:
            where.append("status = ?")
            params.append(JobStatus(query.status).value)
        if query.account_id is not None:
            where.append("account_id = ?")
            params.append(query.account_id)
        if query.since is not None:
            where.append("created_at >= ?")
            params.append(timestamp(query.since))
        if query.before is not None:
            where.append("(created_at, job_id) < (?, ?)")
            params.extend([timestamp(query.before[0]), query.before[1]])
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._read(
            f"SELECT {_JOB_COLUMNS} FROM jobs {clause}"  # noqa: S608 - fixed columns and clauses
            " ORDER BY created_at DESC, job_id DESC LIMIT ?",
            (*params, query.limit + 1),
        )
        items = tuple(job_record(r) for r in rows[: query.limit])
        more = len(rows) > query.limit
        return JobPage(items, (items[-1].created_at, items[-1].job_id) if more else None)

    async def job_by_ref(self, caller: str, external_ref: str) -> JobRecord | None:
        rows = await self._read(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE caller = ? AND external_ref = ?",  # noqa: S608 - fixed columns
            (caller, external_ref),
        )
        return job_record(rows[0]) if rows else None

    async def reserve_slots(
        self, job_id: str, wants: Sequence[SlotWant], *, request_id: str, now: datetime
    ) -> list[Reservation]:
        at = timestamp(now)
        if not wants:
            return []

        def run(conn: sqlite3.Connection) -> list[Reservation]:
            got = [_reserve_one(conn, job_id, want, request_id, at) for want in wants]
            if any(isinstance(r, Reserved) for r in got):
                conn.execute(
                    "UPDATE jobs SET status = 'in_progress', updated_at = ?"
                    " WHERE job_id = ? AND status = 'pending'",
                    (at, job_id),
                )
            return got

        return await self._writer.submit(run)

    async def complete_slots(self, outcomes: Sequence[SlotOutcome], *, now: datetime) -> None:
        at = timestamp(now)
        for outcome in outcomes:
            check_outcome(outcome)
        if not outcomes:
            return

        def run(conn: sqlite3.Connection) -> None:
            finished: set[str] = set()
            for o in outcomes:
                row = conn.execute(
                    _APPLY_OUTCOME,
                    (
                        o.job_id,
                        o.entity_type,
                        o.slot_no,
                        o.request_id,
                        SlotState(o.state).value,
                        o.graph_id,
                        at,
                    ),
                ).fetchall()
                if row and row[0][0] == SlotState.CREATED:
                    finished.add(o.job_id)
            for job_id in sorted(finished):
                conn.execute(_COMPLETE_IF_DONE, (job_id, at))

        await self._writer.submit(run)

    async def resolve_slot(
        self, job_id: str, entity_type: str, slot_no: int, *, graph_id: str | None, now: datetime
    ) -> None:
        at = timestamp(now)

        def run(conn: sqlite3.Connection) -> None:
            row = conn.execute(_RESOLVE, (job_id, entity_type, slot_no, graph_id, at)).fetchall()
            if row and row[0][0] == SlotState.CREATED:
                conn.execute(_COMPLETE_IF_DONE, (job_id, at))

        await self._writer.submit(run)

    async def repair_slot(
        self,
        job_id: str,
        entity_type: str,
        slot_no: int,
        *,
        was: str | None,
        graph_id: str | None,
        now: datetime,
    ) -> bool:
        at = timestamp(now)

        def run(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(
                """
                UPDATE slots
                SET state = CASE WHEN ?5 IS NULL THEN 'free' ELSE 'created' END,
                    graph_id = ?5, request_id = NULL, updated_at = ?6
                WHERE job_id = ?1 AND entity_type = ?2 AND slot_no = ?3
                  AND ((?4 IS NULL AND state = 'free')
                       OR (?4 IS NOT NULL AND state = 'created' AND graph_id = ?4))
                """,
                (job_id, entity_type, slot_no, was, graph_id, at),
            ).rowcount
            if not changed:
                return False
            if graph_id is None:
                conn.execute(
                    "UPDATE jobs SET status = 'in_progress', updated_at = ?2"
                    " WHERE job_id = ?1 AND status = 'completed'",
                    (job_id, at),
                )
            else:
                conn.execute(_COMPLETE_IF_DONE, (job_id, at))
            return True

        return await self._writer.submit(run)

    async def slots(self, job_id: str) -> list[SlotRecord]:
        rows = await self._read(
            f"SELECT {_SLOT_COLUMNS} FROM slots WHERE job_id = ?"  # noqa: S608 - fixed columns
            " ORDER BY entity_type, slot_no",
            (job_id,),
        )
        return [slot_record(r) for r in rows]

    async def held_slots(self, *, updated_before: datetime, limit: int = 500) -> list[SlotRecord]:
        rows = await self._read(
            f"SELECT {_SLOT_COLUMNS} FROM slots WHERE state = 'reserved' AND updated_at < ?"  # noqa: S608 - fixed columns
            " ORDER BY updated_at LIMIT ?",
            (timestamp(updated_before), limit),
        )
        return [slot_record(r) for r in rows]

    async def set_job_status(self, job_id: str, status: JobStatus, *, now: datetime) -> None:
        at = timestamp(now)
        value = JobStatus(status).value

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE jobs SET status = ?, updated_at = ? WHERE job_id = ? AND status <> ?",
                (value, at, job_id, value),
            )

        await self._writer.submit(run)

    async def record_checks(
        self,
        checks: Sequence[CheckResult],
        *,
        caller: str,
        account_id: str,
        job_id: str | None,
        now: datetime,
    ) -> None:
        at = timestamp(now)
        rows = [
            (
                job_id,
                caller,
                account_id,
                c.name,
                c.status,
                c.detail,
                c.duration_ms,
                canonical_json(c.data),
                at,
            )
            for c in checks
        ]
        if not rows:
            return

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO pre_creation_verifications (job_id, caller, account_id, name,"
                " status, detail, duration_ms, data, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        await self._writer.submit(run)

    async def checks(self, job_id: str) -> list[CheckResult]:
        """The checks recorded for *job_id*, in the order recorded."""
        rows = await self._read(
            "SELECT name, status, detail, duration_ms, data FROM pre_creation_verifications"
            " WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [CheckResult(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]
