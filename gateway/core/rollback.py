"""Pure: what a rollback deletes, in which order and batches, and what Graph's answers mean.

No I/O, no clock. The shell (gateway/rollback.py) gathers the ledger rows, the job's slots and
the audit of earlier runs, and executes the plan returned here (DESIGN.md §2 invariant 8, §6
"Rollback": children before parents, every delete idempotent, resumable).

Decisions:

- **Only the campaign tree is deleted.** Ads, then ad sets, then campaigns. Graph deletes a
  campaign's or an ad set's children along with it, but deleting them first makes each one its
  own audited step, with its own backup, and a failed child never hides behind its parent.
- **Creatives, images and videos are kept** (`Kept(why="asset")`). They are account-level
  assets, not children of the campaign tree: one creative or image may serve ads outside the
  job, and an ad's backup names the creative it used (so a reconstruction needs it to exist).
  The plan lists them so an operator can delete them by hand.
- **A batch holds one level only.** Graph runs the independent ops of a batch in parallel
  (graph-api-notes §4), so an ad and its ad set in one batch would race; batches of one level,
  in order, keep children strictly first.
- **Rows whose outcome is not known** (`sending`, `unknown`) are listed, not deleted: there is
  no id to delete. Their parent's delete takes them along on Graph if they exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.retry import ErrorClass, ErrorRules, classify_error, graph_error
from gateway.model import (
    AuditAction,
    AuditOutcome,
    AuditRecord,
    CreateSource,
    EntityRecord,
    EntityState,
    JobStatus,
    SlotRecord,
    SlotState,
)

# Graph's batch API takes at most 50 ops per call (graph-api-notes §4).
MAX_BATCH = 50
# Deletion order, children first. A type the ledger never learned (a copy whose answer did not
# name it) goes last: it is either a parent (last anyway) or a child its parent took along.
LEVELS: Mapping[str, int] = {"ad": 0, "adset": 1, "campaign": 2}
UNKNOWN_LEVEL = 3
ASSET_TYPES = frozenset({"adcreative", "adimage", "advideo"})
# Op indexes past this belong to an entity an op's answer named (a copy's children, the extra
# images of an upload): op i's children are (i + 1) * 1000 + n (gateway/settle.py).
CHILD_OP_BASE = 1000

_COMMON = ("id", "name", "status", "configured_status", "effective_status")
_TIMES = ("created_time", "updated_time")
# What a step reads before it deletes (the backup): the fields a reconstruction needs. Graph
# refuses a field its node type does not have, so each type has its own list, and a batch
# (one level, so one type, except UNKNOWN_LEVEL) reads one list.
BACKUP_FIELDS: Mapping[str, tuple[str, ...]] = {
    "campaign": (
        *_COMMON,
        "account_id",
        "objective",
        "special_ad_categories",
        "buying_type",
        "bid_strategy",
        "daily_budget",
        "lifetime_budget",
        "spend_cap",
        "start_time",
        "stop_time",
        *_TIMES,
    ),
    "adset": (
        *_COMMON,
        "account_id",
        "campaign_id",
        "billing_event",
        "optimization_goal",
        "bid_strategy",
        "bid_amount",
        "daily_budget",
        "lifetime_budget",
        "targeting",
        "promoted_object",
        "start_time",
        "end_time",
        *_TIMES,
    ),
    "ad": (
        *_COMMON,
        "account_id",
        "campaign_id",
        "adset_id",
        "creative",
        "tracking_specs",
        "conversion_domain",
        *_TIMES,
    ),
}
# Fields every ad object has, for a type the ledger never learned.
GENERIC_FIELDS = (*_COMMON, *_TIMES)
DELETED = "DELETED"
_STATUS_FIELDS = ("status", "configured_status", "effective_status")
# Graph's "no such object": 100/33 (does not exist, or cannot be loaded) and 803 (an alias in
# `ids=` does not exist) (graph-api-notes §2.6, §2.7).
_GONE_CODES: frozenset[tuple[int, int | None]] = frozenset({(100, 33), (803, None)})
DONE_OUTCOMES = frozenset({AuditOutcome.OK.value, AuditOutcome.ALREADY_DELETED.value})


@dataclass(frozen=True)
class Step:
    """Delete one entity: read it (the backup), then delete it."""

    graph_id: str
    entity_type: str
    account_id: str | None
    batch: int  # 1-based; every step of a batch has the same level

    @property
    def fields(self) -> tuple[str, ...]:
        return backup_fields(self.entity_type)


@dataclass(frozen=True)
class Kept:
    """A recorded entity the rollback does not delete, and why: `asset` (a creative, image or
    video) or `unresolved` (its create's outcome is not known; no id to delete)."""

    entity_type: str
    why: str
    graph_id: str | None = None
    ledger_id: int | None = None


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]  # what is left to do, in order
    done: tuple[str, ...] = ()  # live on record, but an earlier run's audit shows them done
    kept: tuple[Kept, ...] = ()

    @property
    def batches(self) -> tuple[tuple[Step, ...], ...]:
        out: dict[int, list[Step]] = {}
        for step in self.steps:
            out.setdefault(step.batch, []).append(step)
        return tuple(tuple(out[n]) for n in sorted(out))


def backup_fields(entity_type: str) -> tuple[str, ...]:
    return BACKUP_FIELDS.get(entity_type, GENERIC_FIELDS)


def level(entity_type: str) -> int:
    return LEVELS.get(entity_type, UNKNOWN_LEVEL)


# --------------------------------------------------------------------------- which rows


def campaign_tree(rows: Sequence[EntityRecord], campaign_id: str) -> tuple[EntityRecord, ...]:
    """The rows of *rows* (e.g. every row of the campaign's ad account) whose parent chain
    leads to *campaign_id*, the campaign's own rows included, in the order given.

    A row's parent: a child an op's answer named belongs to that op's row; a copied ad set or
    ad lands beside its source (its parent is its source's parent; a re-parented copy is
    caught by the shell, which checks the campaign on Graph before deleting); a copied
    campaign is a tree of its own; any other row's parent is its `parent_id`.
    """
    by_graph_id: dict[str, list[EntityRecord]] = {}
    by_op: dict[tuple[str, int], EntityRecord] = {}
    for row in rows:
        if row.graph_id is not None:
            by_graph_id.setdefault(row.graph_id, []).append(row)
        by_op[(row.request_id, row.op_index)] = row
    memo: dict[int, bool] = {}

    def within(graph_id: str | None) -> bool:
        if graph_id is None:
            return False
        return graph_id == campaign_id or any(inside(r) for r in by_graph_id.get(graph_id, ()))

    def inside(row: EntityRecord) -> bool:
        if row.id in memo:
            return memo[row.id]
        memo[row.id] = False  # a cycle in corrupt data leads nowhere
        memo[row.id] = found = _inside(row)
        return found

    def _inside(row: EntityRecord) -> bool:
        if row.graph_id == campaign_id:
            return True
        if row.op_index >= CHILD_OP_BASE:
            owner = by_op.get((row.request_id, row.op_index // CHILD_OP_BASE - 1))
            if owner is not None:
                return inside(owner)
        if row.source is CreateSource.COPY:
            if row.entity_type == "campaign":
                return False
            return any(
                within(source.parent_id) for source in by_graph_id.get(row.parent_id or "", ())
            )
        return within(row.parent_id)

    return tuple(row for row in rows if inside(row))


# --------------------------------------------------------------------------- the plan


def plan(
    rows: Iterable[EntityRecord],
    *,
    slots: Iterable[SlotRecord] = (),
    done: Iterable[str] = (),
    default_account: str | None = None,
    batch_size: int = MAX_BATCH,
) -> Plan:
    """The steps that delete every live entity of *rows* (state `created`) and *slots* (state
    `created`), one per Graph id, children first, in batches of at most *batch_size* of one
    level each; less the Graph ids in *done* (an earlier run deleted them: see `done_ids`).

    Within a level, entities come in ledger order (rows by id, then slots). A step's account
    is its rows' ad account, else *default_account* (a job's account, for slots).
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH}, got {batch_size}")
    live: dict[str, tuple[str, str | None]] = {}  # graph id -> (type, account), first seen first
    kept: dict[str | int, Kept] = {}
    unresolved: list[EntityRecord] = []

    def add(graph_id: str, entity_type: str, account: str | None) -> None:
        known = live.get(graph_id)
        if known is None:
            live[graph_id] = (entity_type, account or default_account)
            return
        # Duplicated rows (adopted, discovered twice): keep a learned type and an account.
        better = entity_type if level(known[0]) == UNKNOWN_LEVEL else known[0]
        live[graph_id] = (better, known[1] or account)

    for row in sorted(rows, key=lambda r: r.id):
        if row.state is EntityState.CREATED and row.graph_id is not None:
            if row.entity_type in ASSET_TYPES:
                kept.setdefault(row.graph_id, Kept(row.entity_type, "asset", row.graph_id, row.id))
            else:
                add(row.graph_id, row.entity_type, row.account_id)
        elif row.state in (EntityState.SENDING, EntityState.UNKNOWN):
            unresolved.append(row)
    for slot in slots:
        if slot.state is SlotState.CREATED and slot.graph_id is not None:
            if slot.entity_type in ASSET_TYPES:
                kept.setdefault(slot.graph_id, Kept(slot.entity_type, "asset", slot.graph_id))
            else:
                add(slot.graph_id, slot.entity_type, None)
    for row in unresolved:
        if row.graph_id is None or row.graph_id not in live:
            kept.setdefault(row.id, Kept(row.entity_type, "unresolved", row.graph_id, row.id))

    finished = set(done)
    order = {graph_id: n for n, graph_id in enumerate(live)}
    todo = sorted(
        (g for g in live if g not in finished), key=lambda g: (level(live[g][0]), order[g])
    )
    steps: list[Step] = []
    batch = in_batch = 0
    for graph_id in todo:
        entity_type, account = live[graph_id]
        if (
            not steps
            or level(steps[-1].entity_type) != level(entity_type)
            or in_batch == batch_size
        ):
            batch, in_batch = batch + 1, 0
        in_batch += 1
        steps.append(Step(graph_id, entity_type, account, batch))
    return Plan(
        steps=tuple(steps),
        done=tuple(g for g in live if g in finished),
        kept=tuple(kept.values()),
    )


def done_ids(records: Iterable[AuditRecord]) -> frozenset[str]:
    """The Graph ids earlier runs' rollback steps deleted (or found deleted already)."""
    return frozenset(
        r.graph_id
        for r in records
        if r.action == AuditAction.ROLLBACK_STEP and r.outcome in DONE_OUTCOMES and r.graph_id
    )


# --------------------------------------------------------------------------- Graph's answers


@dataclass(frozen=True)
class Live:
    """The entity exists and is not deleted: delete it."""


@dataclass(frozen=True)
class Gone:
    """Graph shows the entity deleted, or has no such object: the step is done."""


@dataclass(frozen=True)
class Foreign:
    """Graph shows the entity outside the campaign being rolled back: leave it alone."""

    campaign_id: str | None


ReadVerdict = Live | Gone | Foreign


def is_gone_error(error: Mapping[str, Any] | None) -> bool:
    """Whether a Graph error says there is no such object (100/33, 803)."""
    if error is None:
        return False
    code, subcode = error.get("code"), error.get("error_subcode")
    return (code, subcode) in _GONE_CODES or (code, None) in _GONE_CODES


def read_verdict(doc: Mapping[str, Any] | None, *, campaign_id: str | None = None) -> ReadVerdict:
    """What a read of one entity (its fields; None: Graph has no such object) means. With
    *campaign_id* (a campaign tree's rollback) a live entity must show it is in that tree: be
    the campaign or name it as its `campaign_id`."""
    if doc is None or any(doc.get(f) == DELETED for f in _STATUS_FIELDS):
        return Gone()
    if campaign_id is not None and campaign_id not in (doc.get("id"), doc.get("campaign_id")):
        parent = doc.get("campaign_id")
        return Foreign(parent if isinstance(parent, str) else None)
    return Live()


@dataclass(frozen=True)
class Deleted:
    """Graph deleted the entity."""


@dataclass(frozen=True)
class Again:
    """No verdict yet (a `null` entry, a throttle, a transient error): try again."""

    reason: str  # null | throttle | transient
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Refused:
    """Graph refused the delete for good."""

    error: Mapping[str, Any]


DeleteVerdict = Deleted | Gone | Again | Refused


def delete_verdict(entry: Any, rules: ErrorRules) -> DeleteVerdict:
    """What one entry of a batch answer to `DELETE /{id}` means. *entry* is the entry as
    decoded from the answer: `{"code": 200, "body": "{\\"success\\":true}"}`, or None."""
    if not isinstance(entry, Mapping):
        return Again("null")
    status = entry.get("code")
    status = status if isinstance(status, int) and not isinstance(status, bool) else None
    body = _decode(entry.get("body"))
    error = graph_error(body)
    if error is None and status is not None and 200 <= status < 300:
        if isinstance(body, Mapping) and body.get("success") is False:
            return Refused({"status": status, "message": "Graph answered success: false"})
        return Deleted()
    if is_gone_error(error):
        return Gone()
    if status is None and error is None:
        return Again("null")
    verdict = classify_error(rules, status=status, error=error)
    summary = dict(error) if error is not None else {"status": status}
    if verdict is ErrorClass.THROTTLE:
        return Again("throttle", summary)
    if verdict is ErrorClass.TRANSIENT:
        return Again("transient", summary)
    return Refused(summary)


def _decode(body: Any) -> Any:
    """A batch entry's body: a string holding JSON, already parsed JSON, or None."""
    if not isinstance(body, str):
        return body
    try:
        return json.loads(body)
    except ValueError:
        return None


def final_status(outcomes: Iterable[str], kept: Iterable[Kept] = ()) -> JobStatus:
    """A job's status after a rollback run whose steps ended with *outcomes*: rolled back when
    every step is done (also when there were none) and no create of the job is unresolved
    (its entity may exist: once recovery settles it, executing again deletes it); else
    partially rolled back."""
    steps_done = all(o in DONE_OUTCOMES for o in outcomes)
    if steps_done and not any(k.why == "unresolved" for k in kept):
        return JobStatus.ROLLED_BACK
    return JobStatus.PARTIALLY_ROLLED_BACK
