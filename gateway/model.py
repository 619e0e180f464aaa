"""Value types shared by every layer: ledger intents, outcomes and records.

Pure data: frozen dataclasses and StrEnums, no behaviour beyond small derived properties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EntityState(StrEnum):
    """Where one create stands. `sending` is written before Graph sees anything."""

    SENDING = "sending"  # intent committed; the request may or may not have reached Graph
    CREATED = "created"  # Graph answered with the entity's id
    FAILED = "failed"  # Graph answered with an error, or the request never left
    UNKNOWN = "unknown"  # the request was sent and no answer came: look on Graph


class CreateSource(StrEnum):
    """How the entity was asked for."""

    SINGLE = "single"  # POST /act_{id}/{edge}
    BATCH = "batch"  # one op inside a batch call
    COPY = "copy"  # POST /{id}/copies (the copy itself and every child it names)


@dataclass(frozen=True)
class Intent:
    """A create about to be forwarded, recorded before it is (write-ahead).

    `op_index` tells apart the creates of one request: the op's index in a batch, 0 for a
    single create; the entities a copy answer names get their own rows (`add_entities`).
    """

    request_id: str
    op_index: int
    caller: str  # HMAC of the access token, hex; never the token
    account_id: str | None  # "act_<n>"; None only for a copy whose source is not known yet
    entity_type: str  # campaign | adset | ad | adcreative | adimage | advideo | copy
    source: CreateSource
    parent_id: str | None = None  # campaign_id of an ad set, adset_id of an ad, copied source
    name: str | None = None
    job_id: str | None = None
    slot_no: int | None = None  # the job slot this create fills
    # A job's create: {"path": unversioned path, "params": {...}} without any token, so a
    # repair can make the entity again if Graph loses it.
    params: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one intent (a ledger row id)."""

    entity_id: int
    state: EntityState
    graph_id: str | None = None
    entity_type: str | None = None  # set when the answer reveals it (copies)
    error: Mapping[str, Any] | None = None  # Graph's error: status, code, subcode, message


@dataclass(frozen=True)
class Discovered:
    """An entity Graph named in an answer without a row of its own yet (a copy's children)."""

    request_id: str
    op_index: int
    caller: str
    account_id: str | None
    entity_type: str
    graph_id: str
    parent_id: str | None = None  # the entity it was copied from
    job_id: str | None = None
    source: CreateSource = CreateSource.COPY  # SINGLE/BATCH for extra images of an upload


@dataclass(frozen=True)
class EntityRecord:
    """One row of the ledger as the admin API shows it."""

    id: int
    request_id: str
    op_index: int
    caller: str
    account_id: str | None
    entity_type: str
    source: CreateSource
    state: EntityState
    parent_id: str | None
    name: str | None
    job_id: str | None
    graph_id: str | None
    error: Mapping[str, Any] | None
    created_at: datetime
    updated_at: datetime
    slot_no: int | None = None
    params: Mapping[str, Any] | None = None  # see Intent.params


@dataclass(frozen=True)
class EntityQuery:
    """Filters and keyset paging for `Ledger.entities` (ids descending: newest first)."""

    account_id: str | None = None
    job_id: str | None = None
    since: datetime | None = None
    state: EntityState | None = None
    before_id: int | None = None  # keyset cursor: rows with id < before_id
    limit: int = 100


@dataclass(frozen=True)
class EntityPage:
    items: tuple[EntityRecord, ...]
    next_before_id: int | None = None  # pass as before_id for the next page; None: last page


# --- jobs, slots, verifications (DESIGN.md §3.1) -------------------------------------------


class JobStatus(StrEnum):
    PENDING = "pending"  # declared and verified; nothing created yet
    IN_PROGRESS = "in_progress"  # at least one slot reserved
    COMPLETED = "completed"  # every slot created
    FAILED = "failed"  # refused by Graph for good (e.g. the account was suspended): no creates
    ROLLED_BACK = "rolled_back"  # every entity of the job deleted by an admin rollback; no creates
    # A rollback is running, or ended with steps that failed: no creates; executing the
    # rollback again finishes it (gateway/rollback.py)
    PARTIALLY_ROLLED_BACK = "partially_rolled_back"


@dataclass(frozen=True)
class JobQuery:
    """Filters and keyset paging for `JobStore.list_jobs` (newest first)."""

    status: JobStatus | None = None
    account_id: str | None = None
    since: datetime | None = None  # created at or after
    before: tuple[datetime, str] | None = None  # keyset cursor: (created_at, job_id) of the last
    limit: int = 100


@dataclass(frozen=True)
class JobPage:
    items: tuple[JobRecord, ...]
    next_before: tuple[datetime, str] | None = None  # None: the last page


@dataclass(frozen=True)
class DueNotification:
    """A job whose current (ending) status its notify_url has not been told yet."""

    job: JobRecord
    url: str
    tries: int  # failed tries for this status so far


# The statuses a job's notify_url is told about.
ENDING_JOB_STATES = ("completed", "failed", "rolled_back", "partially_rolled_back")


CLOSED_JOB_STATES = frozenset(
    {JobStatus.FAILED, JobStatus.ROLLED_BACK, JobStatus.PARTIALLY_ROLLED_BACK}
)


class SlotState(StrEnum):
    FREE = "free"  # nobody holds it; the next create of its type takes the lowest free one
    RESERVED = "reserved"  # a request holds it and is creating its entity now
    UNKNOWN = "unknown"  # sent, no answer: counts as in flight until reconciled
    CREATED = "created"  # holds its entity's Graph id for good


@dataclass(frozen=True)
class JobSpec:
    """What a backend declares before a job starts."""

    caller: str  # HMAC of the declaring token
    account_id: str  # "act_<n>"
    campaign_name: str
    expect: Mapping[str, int]  # entity type -> how many, e.g. {"campaign": 1, "adset": 50}
    external_ref: str | None = None  # the caller's id for the job: makes the declaration idempotent
    notify_url: str | None = None  # gets one POST when the job completes, fails or is rolled back


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    caller: str
    account_id: str
    campaign_name: str
    expect: Mapping[str, int]
    external_ref: str | None
    status: JobStatus
    verification: Mapping[
        str, Any
    ]  # the pre-creation verification report, as returned to the caller
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class SlotRecord:
    job_id: str
    entity_type: str
    slot_no: int  # 1..expected
    state: SlotState
    request_id: str | None  # the request holding it (reserved/unknown) or that created it
    graph_id: str | None
    updated_at: datetime


@dataclass(frozen=True)
class SlotWant:
    """One slot a request asks for: the next free one of a type, or a named one."""

    entity_type: str
    slot_no: int | None = None


@dataclass(frozen=True)
class Reserved:
    slot_no: int


@dataclass(frozen=True)
class AlreadyCreated:
    """The slot holds an entity already: replay it, never create another."""

    slot_no: int
    graph_id: str


@dataclass(frozen=True)
class SlotBusy:
    """The named slot is held by another request (reserved, or sent with no answer yet)."""

    slot_no: int
    request_id: str | None


@dataclass(frozen=True)
class NoCapacity:
    """Every slot of the type is created or in flight: the cap is reached."""

    entity_type: str
    expected: int
    created: int
    in_flight: int


Reservation = Reserved | AlreadyCreated | SlotBusy | NoCapacity


@dataclass(frozen=True)
class SlotOutcome:
    """What became of a reserved slot; applied only if `request_id` still holds it."""

    job_id: str
    entity_type: str
    slot_no: int
    request_id: str
    state: SlotState  # CREATED (with graph_id), FREE (nothing was created), UNKNOWN
    graph_id: str | None = None


@dataclass(frozen=True)
class CheckResult:
    """One pre-creation verification check."""

    name: str  # token | account | campaign_name | object_limits
    status: str  # passed | failed | warning | error (could not run)
    detail: str
    duration_ms: float
    data: Mapping[str, Any] = field(default_factory=dict)


# --- idempotency keys (DESIGN.md §6) --------------------------------------------------------


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Claimed:
    """This request owns the key: run it, then `finish` (or `release`)."""

    recovered: bool = False  # the previous holder's lease had expired (it crashed)
    previous_request_id: str | None = None  # that holder, whose creates may exist


@dataclass(frozen=True)
class Replay:
    response: StoredResponse


@dataclass(frozen=True)
class InProgress:
    request_id: str
    locked_until: datetime


@dataclass(frozen=True)
class Mismatch:
    """Same key and caller, a different request."""


Claim = Claimed | Replay | InProgress | Mismatch


# --- the audit trail of safety actions (DESIGN.md §2 invariant 8, §3.3) ---------------------


class AuditAction(StrEnum):
    """What an audit row records. The column is free text (bounded), so a new action needs
    no migration; these are the ones the gateway writes."""

    VERIFICATION = "verification"
    REPAIR = "repair"
    CAP_REJECTION = "cap_rejection"
    ROLLBACK_PLAN = "rollback_plan"  # an executed rollback's plan, before its first delete
    ROLLBACK_STEP = "rollback_step"  # one entity: its backup and what its delete did
    ROLLBACK = "rollback"  # an executed rollback's summary


class AuditOutcome(StrEnum):
    OK = "ok"  # done (a rollback step: Graph deleted the entity)
    FAILED = "failed"
    SKIPPED = "skipped"  # deliberately not done (e.g. the entity is not where the ledger says)
    ALREADY_DELETED = "already_deleted"  # Graph shows the entity deleted (or gone) already
    PARTIAL = "partial"  # a summary: some steps failed


@dataclass(frozen=True)
class AuditEntry:
    """One row to append to the audit trail. Never holds an access token."""

    action: str  # an AuditAction value (free text up to 64 characters)
    outcome: str  # an AuditOutcome value (free text up to 32 characters)
    job_id: str | None = None
    campaign_id: str | None = None
    graph_id: str | None = None  # the entity the row is about, if one
    reason: str = ""  # why: the operator's reason for a rollback, a check's finding, ...
    detail: Mapping[str, Any] = field(default_factory=dict)  # e.g. a backup of the entity
    actor: str = "gateway"  # who: "admin" (the admin API), "gateway" (automatic)


@dataclass(frozen=True)
class AuditRecord:
    id: int  # increasing; the keyset cursor
    action: str
    outcome: str
    job_id: str | None
    campaign_id: str | None
    graph_id: str | None
    reason: str
    detail: Mapping[str, Any]
    actor: str
    created_at: datetime


@dataclass(frozen=True)
class AuditPage:
    items: tuple[AuditRecord, ...]
    next_before_id: int | None = None  # pass as before_id for the next page; None: last page
