"""Protocols the shell talks to; adapters in gateway/stores implement them.

Protocols only: no implementation, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from gateway.model import (
    AuditEntry,
    AuditPage,
    CheckResult,
    Claim,
    Discovered,
    DueNotification,
    EntityPage,
    EntityQuery,
    EntityRecord,
    Intent,
    JobPage,
    JobQuery,
    JobRecord,
    JobSpec,
    JobStatus,
    Outcome,
    Reservation,
    SlotOutcome,
    SlotRecord,
    SlotWant,
    StoredResponse,
)


class Ledger(Protocol):
    """The durable record of every entity created through the gateway.

    Every method is one transaction: it happens entirely or not at all. Any failure to reach
    or write the store raises `StoreUnavailable` (gateway.errors); callers fail creates closed.
    A closed ledger raises `StoreUnavailable` too. Every `now` must be timezone-aware (a naive
    one is a bug: ValueError); timestamps come back in UTC. A value the schema refuses (text
    over its length bound, see migrations/) raises ValueError, not a StoreError.
    """

    async def write_intents(self, intents: Sequence[Intent], *, now: datetime) -> list[int]:
        """Durably record *intents* in state `sending`; return their row ids in order.

        Returns only after the rows are committed (fsync'd as the backend promises), so a
        create may be forwarded once it returns. Writing the same (request_id, op_index)
        twice raises `StoreConflict`, and then none of the call's intents is written. Ids
        increase in the order given but may have gaps.
        """

    async def settle(self, outcomes: Sequence[Outcome], *, now: datetime) -> None:
        """Move rows to `created` (with graph_id), `failed` (with error) or `unknown`.

        Settling a row again with the same outcome is a no-op; an unknown row id is ignored.
        "The same" means equal state, graph_id, entity_type and error; a no-op leaves
        updated_at alone, any change sets it to *now*. An outcome's graph_id or entity_type of
        None means "not said": a known value is kept (a Graph id is never erased). The error is
        replaced as given (None clears it). If one call names a row twice, the last one wins.
        """

    async def add_entities(self, found: Sequence[Discovered], *, now: datetime) -> list[int]:
        """Record entities Graph named without an intent row of their own (state `created`).

        Idempotent on (request_id, op_index): a second call returns the existing row ids, in
        the order given, and changes nothing (also when the existing row is an intent). New
        rows get source `copy`, as `Discovered` carries no source of its own.
        """

    async def entities(self, query: EntityQuery) -> EntityPage:
        """Rows matching *query*, newest first, one page of at most `query.limit`.

        All given filters must hold; `since` is compared with created_at, inclusive.
        `next_before_id` is None on the last page (also when it is exactly full). A limit below
        1 raises ValueError.
        """

    async def request_entities(self, request_id: str) -> list[EntityRecord]:
        """Every row written for one request (all its ops and discovered entities)."""

    async def count_live(self, parent_ids: Sequence[str], entity_type: str) -> int:
        """Rows of *entity_type* under any of *parent_ids* that exist or may exist on Graph
        (created, sending, unknown): what a per-campaign cap counts."""

    async def find_by_graph_id(self, graph_id: str) -> EntityRecord | None:
        """The newest row whose entity has *graph_id* (e.g. to learn a copy source's account)."""

    async def token_key(self) -> bytes:
        """The HMAC key for caller ids: created once per database, the same for every replica.

        32 random bytes, made by the first call on a database (racing first calls agree).
        """

    async def check(self) -> None:
        """Raise `StoreUnavailable` unless the store answers now (readiness)."""

    async def aclose(self) -> None:
        """Release connections; calling it twice is harmless."""


class JobStore(Protocol):
    """Jobs, their numbered slots and pre-creation verifications. Every method is one
    transaction; slot reservation is atomic across concurrent requests and replicas, so
    created + in-flight slots never exceed what the job expected (invariant 4)."""

    async def create_job(
        self, spec: JobSpec, *, job_id: str, verification: Mapping[str, Any], now: datetime
    ) -> tuple[JobRecord, bool]:
        """Insert the job (status pending) and one FREE slot per expected entity.

        Returns (record, True). When `spec.external_ref` is set and the same caller already
        declared a job with it, inserts nothing and returns (that job, False).
        """

    async def job(self, job_id: str) -> JobRecord | None:
        """The job, or None."""

    async def due_notifications(self, *, max_tries: int, limit: int = 100) -> list[DueNotification]:
        """Jobs with a notify_url whose status is an ending one (ENDING_JOB_STATES) not yet
        announced, unless that status already failed *max_tries* times; oldest change first."""

    async def notification_done(
        self, job_id: str, status: str, *, ok: bool, error: str | None, now: datetime
    ) -> None:
        """Record a POST announcing *status*: ok → announced; else one more failed try for it
        (a different status than the failed tries' starts the count again)."""

    async def list_jobs(self, query: JobQuery) -> JobPage:
        """Jobs matching every filter given, newest first (created_at, then job_id, both
        descending), one page of at most `query.limit`; `next_before` is the cursor for the
        next page (None on the last). A limit below 1 raises ValueError."""

    async def job_by_ref(self, caller: str, external_ref: str) -> JobRecord | None:
        """The job *caller* declared with *external_ref*, or None."""

    async def reserve_slots(
        self, job_id: str, wants: Sequence[SlotWant], *, request_id: str, now: datetime
    ) -> list[Reservation]:
        """Reserve one slot per want, in order, atomically (all in one transaction).

        A named want (slot_no set): FREE → Reserved; CREATED → AlreadyCreated; RESERVED or
        UNKNOWN → SlotBusy (even if held by *request_id*); out of range → NoCapacity.
        An unnamed want: the lowest FREE slot of its type → Reserved, else NoCapacity.
        A job still `pending` becomes `in_progress` when anything is reserved.
        """

    async def complete_slots(self, outcomes: Sequence[SlotOutcome], *, now: datetime) -> None:
        """Apply each outcome if its request still holds the slot (else ignore it).

        CREATED stores the graph id for good; FREE releases the slot for the next create;
        UNKNOWN keeps it counted as in flight. When every slot of a job is CREATED the job
        becomes `completed`.
        """

    async def resolve_slot(
        self, job_id: str, entity_type: str, slot_no: int, *, graph_id: str | None, now: datetime
    ) -> None:
        """Recovery: an UNKNOWN or RESERVED slot becomes CREATED (graph_id) or FREE (None)."""

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
        """Repair after post-creation verification, atomically and only if the slot is as
        expected: *was* a graph id → the slot must be CREATED with it; *was* None → it must be
        FREE. It becomes CREATED with *graph_id*, or FREE when *graph_id* is None. A freed
        slot reopens a completed job (in_progress); filling the last one completes it.
        Returns whether the slot changed."""

    async def slots(self, job_id: str) -> list[SlotRecord]:
        """Every slot of the job, by type then number."""

    async def checks(self, job_id: str) -> list[CheckResult]:
        """The verification checks recorded for the job, in the order recorded."""

    async def held_slots(self, *, updated_before: datetime, limit: int = 500) -> list[SlotRecord]:
        """RESERVED slots untouched since *updated_before*, oldest first (a request that
        reserved them may have died before writing its intent)."""

    async def set_job_status(self, job_id: str, status: JobStatus, *, now: datetime) -> None:
        """Set the job's status (failed, rolled_back, ...)."""

    async def record_checks(
        self,
        checks: Sequence[CheckResult],
        *,
        caller: str,
        account_id: str,
        job_id: str | None,
        now: datetime,
    ) -> None:
        """Keep every verification check run (job_id None when the job was refused)."""


class IdempotencyStore(Protocol):
    """Idempotency-Key records, scoped by caller and ad account. Every method is atomic."""

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
        """Take the key or say why not.

        New key → Claimed (locked until now + lease). Finished key, same fingerprint →
        Replay. Different fingerprint (finished or not) → Mismatch. Unfinished and its lease
        not expired → InProgress. Unfinished and its lease expired (the holder crashed) →
        Claimed(recovered=True) for *request_id*. Of N concurrent claims exactly one wins.
        """

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
        """Store the response to replay; only the holder (*request_id*) can. Idempotent."""

    async def release(self, scope: str, key: str, *, request_id: str) -> None:
        """Forget an unfinished claim held by *request_id* (nothing was sent), so a retry
        runs afresh. Idempotent."""

    async def hand_back(self, scope: str, key: str, *, request_id: str, previous: str) -> None:
        """Give an unfinished key taken over by *request_id* back to *previous* (whose creates
        are still unresolved), so the next take-over looks at those creates again."""

    async def reap(self, *, now: datetime) -> int:
        """Delete finished records retained past their time; return how many."""


class AuditStore(Protocol):
    """The audit trail of safety actions (verifications, repairs, rollbacks, cap rejections):
    append-only, rows are never changed or deleted. Every method is one transaction; store
    failures raise `StoreUnavailable`, like the Ledger's. No row may hold an access token."""

    async def record_audit(self, entries: Sequence[AuditEntry], *, now: datetime) -> list[int]:
        """Append *entries* (all of them or, on any failure, none); return their ids in order.

        Ids increase in the order given (gaps possible) and are never reused. Every row gets
        created_at = *now* (timezone-aware, else ValueError). A value the schema refuses (an
        empty or over-long action/outcome/actor, a detail over its size bound) raises
        ValueError and writes nothing. An empty *entries* writes nothing and returns [].
        """

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
        """Rows matching every filter given, newest first (id descending), one page of at most
        *limit*; `before_id` is the keyset cursor (rows with id < before_id).

        `next_before_id` is None on the last page (also when it is exactly full). A limit below
        1 raises ValueError.
        """
