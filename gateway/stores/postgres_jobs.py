"""PostgresJobs: the `JobStore` part of PostgresLedger (jobs, slots, pre-creation verifications).

Atomicity, under READ COMMITTED, one transaction per method:

- reserve_slots takes free slots with `FOR UPDATE SKIP LOCKED` inside the statement that marks
  them reserved. A slot another transaction is taking right now is skipped, not waited for;
  one it took since this statement's snapshot fails PostgreSQL's re-check of
  `state = 'free'` on the row's newest version. So concurrent reservations, on any number of
  replicas, never share a slot and never wait on each other, except for a named slot
  (`FOR UPDATE`: waits for the transaction holding it) and, once, on the job row while it is
  pending. All wants of a call commit together or not at all.
- complete_slots and resolve_slot lock the job row (`FOR UPDATE`) before asking "is every
  slot created?": two transactions creating a job's last two slots take turns, and the
  second one's question (a new statement, so a new snapshot) sees the first one's slot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.errors import StoreConflict
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
from gateway.stores.postgres_base import PostgresBase, canonical_json, utc
from gateway.stores.rules import (
    MAX_SLOTS_PER_JOB,
    check_outcome,
    effective_outcomes,
    slot_counts,
)

_JOB_COLUMNS = (
    "job_id, caller, account_id, campaign_name, external_ref, expect, status, verification,"
    " created_at, updated_at"
)
_SLOT_COLUMNS = "job_id, entity_type, slot_no, state, request_id, graph_id, updated_at"
# Up to $3 of the lowest free slots of a type. MATERIALIZED: the locking SELECT runs exactly
# once (a subquery in WHERE may be re-run per row and lock more than $3 slots).
_TAKE_FREE = """
    WITH picked AS MATERIALIZED (
        SELECT slot_no FROM slots
        WHERE job_id = $1 AND entity_type = $2 AND state = 'free'
        ORDER BY slot_no
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    UPDATE slots AS s SET state = 'reserved', request_id = $4, updated_at = $5
    FROM picked
    WHERE s.job_id = $1 AND s.entity_type = $2 AND s.slot_no = picked.slot_no
      AND s.state = 'free'
    RETURNING s.slot_no
"""


def job_record(row: Any) -> JobRecord:
    return JobRecord(
        job_id=row["job_id"],
        caller=row["caller"],
        account_id=row["account_id"],
        campaign_name=row["campaign_name"],
        external_ref=row["external_ref"],
        expect=json.loads(row["expect"]),
        status=JobStatus(row["status"]),
        verification=json.loads(row["verification"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def slot_record(row: Any) -> SlotRecord:
    return SlotRecord(
        job_id=row["job_id"],
        entity_type=row["entity_type"],
        slot_no=row["slot_no"],
        state=SlotState(row["state"]),
        request_id=row["request_id"],
        graph_id=row["graph_id"],
        updated_at=row["updated_at"],
    )


def _runs(wants: Sequence[SlotWant], indexes: list[int]) -> list[list[int]]:
    """*indexes* (wants of one type, in order) cut into runs: consecutive unnamed wants
    together (one statement takes them all), each named want alone."""
    runs: list[list[int]] = []
    for i in indexes:
        if wants[i].slot_no is None and runs and wants[runs[-1][-1]].slot_no is None:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


async def _no_capacity(
    conn: Any, job_id: str, entity_type: str, *, none_free: bool = False
) -> NoCapacity:
    """The counts a refusal reports. With *none_free* (SKIP LOCKED found no free slot) every
    slot that is not created is taken, even those whose reservation another transaction has
    not committed yet (this snapshot still sees them free)."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS expected,
               count(*) FILTER (WHERE state = 'created') AS created,
               count(*) FILTER (WHERE state IN ('reserved', 'unknown')) AS in_flight
        FROM slots WHERE job_id = $1 AND entity_type = $2
        """,
        job_id,
        entity_type,
    )
    in_flight = row["expected"] - row["created"] if none_free else row["in_flight"]
    return NoCapacity(
        entity_type, expected=row["expected"], created=row["created"], in_flight=in_flight
    )


async def _reserve_named(
    conn: Any, job_id: str, want: SlotWant, request_id: str, at: datetime
) -> Reservation:
    slot_no = want.slot_no
    if slot_no is None or not 1 <= slot_no <= MAX_SLOTS_PER_JOB:
        return await _no_capacity(conn, job_id, want.entity_type)
    row = await conn.fetchrow(
        "SELECT state, request_id, graph_id FROM slots"
        " WHERE job_id = $1 AND entity_type = $2 AND slot_no = $3 FOR UPDATE",
        job_id,
        want.entity_type,
        slot_no,
    )
    if row is None:
        return await _no_capacity(conn, job_id, want.entity_type)
    state = SlotState(row["state"])
    if state is SlotState.CREATED:
        return AlreadyCreated(slot_no, row["graph_id"])
    if state is not SlotState.FREE:
        return SlotBusy(slot_no, row["request_id"])
    await conn.execute(
        "UPDATE slots SET state = 'reserved', request_id = $4, updated_at = $5"
        " WHERE job_id = $1 AND entity_type = $2 AND slot_no = $3",
        job_id,
        want.entity_type,
        slot_no,
        request_id,
        at,
    )
    return Reserved(slot_no)


async def _complete_if_done(conn: Any, job_ids: list[str], at: datetime) -> None:
    """Mark the jobs whose every slot is created `completed` (failed / rolled back stay)."""
    # The lock makes concurrent completers of one job take turns; the UPDATE after it is a
    # new statement, so its NOT EXISTS sees what the one before us committed.
    await conn.execute(
        "SELECT 1 FROM jobs WHERE job_id = ANY($1::text[]) ORDER BY job_id FOR UPDATE", job_ids
    )
    await conn.execute(
        """
        UPDATE jobs SET status = 'completed', updated_at = $2
        WHERE job_id = ANY($1::text[]) AND status IN ('pending', 'in_progress')
          AND NOT EXISTS (
              SELECT 1 FROM slots WHERE slots.job_id = jobs.job_id AND slots.state <> 'created'
          )
        """,
        job_ids,
        at,
    )


class PostgresJobs(PostgresBase):
    """`JobStore` on PostgreSQL (see the module docstring for atomicity)."""

    async def create_job(
        self, spec: JobSpec, *, job_id: str, verification: Mapping[str, Any], now: datetime
    ) -> tuple[JobRecord, bool]:
        at = utc(now)
        counts = slot_counts(spec.expect)
        async with self._transaction() as conn:
            # ON CONFLICT waits for a concurrent declaration with the same ref, then does
            # nothing; the SELECT after it (a new snapshot) sees that job.
            row = await conn.fetchrow(
                f"""
                INSERT INTO jobs ({_JOB_COLUMNS})
                VALUES ($1, $2, $3, $4, $5, $6::jsonb, 'pending', $7::jsonb, $8, $8)
                ON CONFLICT (caller, external_ref) WHERE external_ref IS NOT NULL DO NOTHING
                RETURNING {_JOB_COLUMNS}
                """,  # noqa: S608 - fixed columns
                job_id,
                spec.caller,
                spec.account_id,
                spec.campaign_name,
                spec.external_ref,
                canonical_json(dict(spec.expect)),
                canonical_json(verification),
                at,
            )
            if row is None:
                existing = await conn.fetchrow(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE caller = $1 AND external_ref = $2",  # noqa: S608 - fixed columns
                    spec.caller,
                    spec.external_ref,
                )
                if existing is None:
                    # Jobs are never deleted, so only an operator's hand gets here.
                    raise StoreConflict("the job with that external_ref vanished; retry")
                return job_record(existing), False
            await conn.execute(
                """
                INSERT INTO slots (job_id, entity_type, slot_no, state, updated_at)
                SELECT $1, u.t, g.n, 'free', $4
                FROM unnest($2::text[], $3::int[]) AS u(t, c)
                CROSS JOIN LATERAL generate_series(1, u.c) AS g(n)
                """,
                job_id,
                [t for t, _ in counts],
                [c for _, c in counts],
                at,
            )
            if spec.notify_url is not None:
                await conn.execute(
                    "INSERT INTO job_notifications (job_id, url, updated_at) VALUES ($1, $2, $3)",
                    job_id,
                    spec.notify_url,
                    at,
                )
            return job_record(row), True

    async def job(self, job_id: str) -> JobRecord | None:
        rows = await self._fetch(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = $1",  # noqa: S608 - fixed columns
            job_id,
        )
        return job_record(rows[0]) if rows else None

    async def due_notifications(self, *, max_tries: int, limit: int = 100) -> list[DueNotification]:
        columns = ", ".join(f"j.{c.strip()}" for c in _JOB_COLUMNS.split(","))
        rows = await self._fetch(
            f"SELECT {columns}, n.url,"  # noqa: S608 - fixed columns
            " CASE WHEN n.try_status = j.status THEN n.tries ELSE 0 END AS due_tries"
            " FROM job_notifications n JOIN jobs j ON j.job_id = n.job_id"
            " WHERE j.status = ANY($1::text[]) AND n.sent_status IS DISTINCT FROM j.status"
            " AND NOT (n.try_status IS NOT DISTINCT FROM j.status AND n.tries >= $2)"
            " ORDER BY j.updated_at LIMIT $3",
            list(ENDING_JOB_STATES),
            max_tries,
            limit,
        )
        return [DueNotification(job_record(r), r["url"], r["due_tries"]) for r in rows]

    async def notification_done(
        self, job_id: str, status: str, *, ok: bool, error: str | None, now: datetime
    ) -> None:
        at = utc(now)
        async with self._transaction() as conn:
            if ok:
                await conn.execute(
                    "UPDATE job_notifications SET sent_status = $1, try_status = NULL, tries = 0,"
                    " last_error = NULL, updated_at = $2 WHERE job_id = $3",
                    status,
                    at,
                    job_id,
                )
                return
            await conn.execute(
                "UPDATE job_notifications SET"
                " tries = CASE WHEN try_status IS NOT DISTINCT FROM $1 THEN tries + 1 ELSE 1 END,"
                " try_status = $1, last_error = $2, updated_at = $3 WHERE job_id = $4",
                status,
                (error or "")[:500],
                at,
                job_id,
            )

    async def list_jobs(self, query: JobQuery) -> JobPage:
        if query.limit < 1:
            raise ValueError(f"limit must be >= 1, got {query.limit}")
        where: list[str] = []
        params: list[Any] = []

        def arg(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if query.status is not None:
            where.append(f"status = {arg(JobStatus(query.status).value)}")
        if query.account_id is not None:
            where.append(f"account_id = {arg(query.account_id)}")
        if query.since is not None:
            where.append(f"created_at >= {arg(utc(query.since))}")
        if query.before is not None:
            at, job_id = utc(query.before[0]), query.before[1]
            where.append(f"(created_at, job_id) < ({arg(at)}, {arg(job_id)})")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._fetch(
            f"SELECT {_JOB_COLUMNS} FROM jobs {clause}"  # noqa: S608 - fixed columns and clauses
            f" ORDER BY created_at DESC, job_id DESC LIMIT {arg(query.limit + 1)}",
            *params,
        )
        items = tuple(job_record(r) for r in rows[: query.limit])
        more = len(rows) > query.limit
        return JobPage(items, (items[-1].created_at, items[-1].job_id) if more else None)

    async def job_by_ref(self, caller: str, external_ref: str) -> JobRecord | None:
        rows = await self._fetch(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE caller = $1 AND external_ref = $2",  # noqa: S608 - fixed columns
            caller,
            external_ref,
        )
        return job_record(rows[0]) if rows else None

    async def reserve_slots(
        self, job_id: str, wants: Sequence[SlotWant], *, request_id: str, now: datetime
    ) -> list[Reservation]:
        at = utc(now)
        if not wants:
            return []
        results: dict[int, Reservation] = {}
        by_type: dict[str, list[int]] = {}
        for i, want in enumerate(wants):
            by_type.setdefault(want.entity_type, []).append(i)
        async with self._transaction() as conn:
            # Types never share a slot, so each type's wants can be taken together, in their
            # own order; types go in sorted order so named slots are locked in one order.
            for entity_type in sorted(by_type):
                for run in _runs(wants, by_type[entity_type]):
                    if wants[run[0]].slot_no is not None:
                        results[run[0]] = await _reserve_named(
                            conn, job_id, wants[run[0]], request_id, at
                        )
                        continue
                    rows = await conn.fetch(
                        _TAKE_FREE, job_id, entity_type, len(run), request_id, at
                    )
                    taken = sorted(r["slot_no"] for r in rows)
                    for i, slot_no in zip(run, taken, strict=False):
                        results[i] = Reserved(slot_no)
                    if len(taken) < len(run):
                        full = await _no_capacity(conn, job_id, entity_type, none_free=True)
                        results.update((i, full) for i in run[len(taken) :])
            if any(isinstance(r, Reserved) for r in results.values()):
                await conn.execute(
                    "UPDATE jobs SET status = 'in_progress', updated_at = $2"
                    " WHERE job_id = $1 AND status = 'pending'",
                    job_id,
                    at,
                )
        return [results[i] for i in range(len(wants))]

    async def complete_slots(self, outcomes: Sequence[SlotOutcome], *, now: datetime) -> None:
        at = utc(now)
        for outcome in outcomes:
            check_outcome(outcome)
        todo = effective_outcomes(outcomes)
        if not todo:
            return
        async with self._transaction() as conn:
            # Only the holder's outcome matches (request_id, held state); UNKNOWN on a slot
            # already unknown changes nothing.
            rows = await conn.fetch(
                """
                UPDATE slots AS s
                SET state = o.state,
                    request_id = CASE WHEN o.state = 'free' THEN NULL ELSE s.request_id END,
                    graph_id = CASE WHEN o.state = 'created' THEN o.graph_id END,
                    updated_at = $7
                FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[],
                            $6::text[]) AS o(job_id, entity_type, slot_no, request_id, state,
                                             graph_id)
                WHERE s.job_id = o.job_id AND s.entity_type = o.entity_type
                  AND s.slot_no = o.slot_no AND s.request_id = o.request_id
                  AND s.state IN ('reserved', 'unknown') AND s.state <> o.state
                RETURNING s.job_id, s.state
                """,
                [o.job_id for o in todo],
                [o.entity_type for o in todo],
                [o.slot_no for o in todo],
                [o.request_id for o in todo],
                [SlotState(o.state).value for o in todo],
                [o.graph_id for o in todo],
                at,
            )
            finished = sorted({r["job_id"] for r in rows if r["state"] == SlotState.CREATED})
            if finished:
                await _complete_if_done(conn, finished, at)

    async def resolve_slot(
        self, job_id: str, entity_type: str, slot_no: int, *, graph_id: str | None, now: datetime
    ) -> None:
        at = utc(now)
        async with self._transaction() as conn:
            state = await conn.fetchval(
                """
                UPDATE slots
                SET state = CASE WHEN $4::text IS NULL THEN 'free' ELSE 'created' END,
                    request_id = CASE WHEN $4::text IS NULL THEN NULL ELSE request_id END,
                    graph_id = $4, updated_at = $5
                WHERE job_id = $1 AND entity_type = $2 AND slot_no = $3
                  AND state IN ('reserved', 'unknown')
                RETURNING state
                """,
                job_id,
                entity_type,
                slot_no,
                graph_id,
                at,
            )
            if state == SlotState.CREATED:
                await _complete_if_done(conn, [job_id], at)

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
        at = utc(now)
        async with self._transaction() as conn:
            changed = await conn.fetchval(
                """
                UPDATE slots
                SET state = CASE WHEN $5::text IS NULL THEN 'free' ELSE 'created' END,
                    graph_id = $5, request_id = NULL, updated_at = $6
                WHERE job_id = $1 AND entity_type = $2 AND slot_no = $3
                  AND (($4::text IS NULL AND state = 'free')
                       OR ($4::text IS NOT NULL AND state = 'created' AND graph_id = $4))
                RETURNING 1
                """,
                job_id,
                entity_type,
                slot_no,
                was,
                graph_id,
                at,
            )
            if not changed:
                return False
            if graph_id is None:
                await conn.execute(
                    "UPDATE jobs SET status = 'in_progress', updated_at = $2"
                    " WHERE job_id = $1 AND status = 'completed'",
                    job_id,
                    at,
                )
            else:
                await _complete_if_done(conn, [job_id], at)
            return True

    async def slots(self, job_id: str) -> list[SlotRecord]:
        rows = await self._fetch(
            f"SELECT {_SLOT_COLUMNS} FROM slots WHERE job_id = $1"  # noqa: S608 - fixed columns
            " ORDER BY entity_type, slot_no",
            job_id,
        )
        return [slot_record(r) for r in rows]

    async def held_slots(self, *, updated_before: datetime, limit: int = 500) -> list[SlotRecord]:
        rows = await self._fetch(
            f"SELECT {_SLOT_COLUMNS} FROM slots WHERE state = 'reserved' AND updated_at < $1"  # noqa: S608 - fixed columns
            " ORDER BY updated_at LIMIT $2",
            utc(updated_before),
            limit,
        )
        return [slot_record(r) for r in rows]

    async def set_job_status(self, job_id: str, status: JobStatus, *, now: datetime) -> None:
        at = utc(now)
        async with self._connection() as conn:
            await conn.execute(
                "UPDATE jobs SET status = $2, updated_at = $3 WHERE job_id = $1 AND status <> $2",
                job_id,
                JobStatus(status).value,
                at,
            )

    async def record_checks(
        self,
        checks: Sequence[CheckResult],
        *,
        caller: str,
        account_id: str,
        job_id: str | None,
        now: datetime,
    ) -> None:
        at = utc(now)
        if not checks:
            return
        async with self._connection() as conn:
            await conn.execute(
                """
                INSERT INTO pre_creation_verifications (job_id, caller, account_id, name,
                    status, detail, duration_ms, data, created_at)
                SELECT $1, $2, $3, n, s, d, ms, data::jsonb, $9
                FROM unnest($4::text[], $5::text[], $6::text[], $7::float8[], $8::text[])
                     WITH ORDINALITY AS u(n, s, d, ms, data, ord)
                ORDER BY ord
                """,
                job_id,
                caller,
                account_id,
                [c.name for c in checks],
                [c.status for c in checks],
                [c.detail for c in checks],
                [float(c.duration_ms) for c in checks],
                [canonical_json(c.data) for c in checks],
                at,
            )

    async def checks(self, job_id: str) -> list[CheckResult]:
        """The checks recorded for *job_id*, in the order recorded."""
        rows = await self._fetch(
            "SELECT name, status, detail, duration_ms, data FROM pre_creation_verifications"
            " WHERE job_id = $1 ORDER BY id",
            job_id,
        )
        return [
            CheckResult(
                r["name"], r["status"], r["detail"], r["duration_ms"], json.loads(r["data"])
            )
            for r in rows
        ]
