"""Job slots for a create on its way: check parents, reserve, and settle them after the answer.

Reservation is one atomic store call for every slot a request needs (a batch's ops, a copy and
the children it will create), so created + in-flight never exceed the job's expectation.
Refused ops are answered by the gateway and never sent; their slots are released at once.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway import logs
from gateway.context import Gateway
from gateway.core.batchplan import own_entry
from gateway.core.classify import CreateOp
from gateway.core.outcome import Created, Failed, OpOutcome
from gateway.errors import (
    CapExceeded,
    GatewayError,
    ParentMismatch,
    RequestInProgress,
    StoreError,
    UpstreamUnavailable,
)
from gateway.model import (
    AlreadyCreated,
    AuditAction,
    AuditEntry,
    AuditOutcome,
    EntityState,
    JobRecord,
    NoCapacity,
    Reservation,
    Reserved,
    SlotBusy,
    SlotOutcome,
    SlotState,
    SlotWant,
)
from gateway.serial import one_at_a_time
from gateway.upstream import map_errors

# Which parent a job's entity must name: ad sets its campaign, ads its ad sets.
_PARENT_TYPE = {"adset": "campaign", "ad": "adset"}


def _now(gw: Gateway) -> datetime:
    return datetime.fromtimestamp(gw.clock.now(), UTC)


@dataclass
class JobPlan:
    job: JobRecord
    send: list[CreateOp] = field(default_factory=list)  # ops Graph will see
    held: dict[int, list[tuple[str, int]]] = field(default_factory=dict)  # op -> (type, slot)
    refused: dict[int, GatewayError] = field(default_factory=dict)  # ops answered by us
    replay: tuple[int, str] | None = None  # (slot, graph id): a single create already done

    def slot_of(self, index: int) -> int | None:
        held = self.held.get(index)
        return held[0][1] if held else None


# The children a deep copy of each type of source brings along (graph-api-notes §5).
_DEEP_CHILDREN = {"campaign": ("adsets", "ads"), "adset": ("ads",), "ad": ()}
_EDGE_TYPES = {"adsets": "adset", "ads": "ad"}


async def _count_on_graph(gw: Gateway, parent: str, edge: str, token: str | None) -> int:
    """Live children of *parent* on Graph: a deep copy copies what exists, recorded or not."""
    if not token:
        raise UpstreamUnavailable("No token to count the entities a deep copy would create")
    params = {"summary": "true", "limit": "1", "access_token": token}
    with map_errors(create=False):
        async with gw.session.get(
            f"{gw.settings.upstream}/{parent}/{edge}", params=params, timeout=gw.timeout
        ) as resp:
            doc = await resp.json(content_type=None)
    total = (doc.get("summary") or {}).get("total_count") if isinstance(doc, dict) else None
    if resp.status != 200 or not isinstance(total, int):
        raise UpstreamUnavailable(
            f"Graph did not count the {edge} of {parent} (HTTP {resp.status}); a deep copy's "
            "slots cannot be reserved without it"
        )
    return total


async def _copy_wants(
    gw: Gateway, job: JobRecord, op: CreateOp, created: dict[str, set[str]], token: str | None
) -> list[SlotWant]:
    """A copy takes a slot for itself and, deep, one per child it will create."""
    source = await gw.ledger.find_by_graph_id(op.parent_id or "")
    if source is None or source.job_id != job.job_id or source.state is not EntityState.CREATED:
        raise ParentMismatch(
            f"Under job {job.job_id} a copy must copy one of the job's own created entities"
        )
    parent_type = _PARENT_TYPE.get(source.entity_type)
    if op.reparent_id and (parent_type is None or op.reparent_id not in created[parent_type]):
        raise ParentMismatch(
            f"A copy under job {job.job_id} must land in one of the job's {parent_type}s "
            f"({op.reparent_id} is not one)"
        )
    wants = [SlotWant(source.entity_type)]
    if op.deep_copy:
        for edge in _DEEP_CHILDREN.get(source.entity_type, ()):
            count = await _count_on_graph(gw, str(source.graph_id), edge, token)
            wants.extend(SlotWant(_EDGE_TYPES[edge]) for _ in range(count))
    return wants


def _check_parent(op: CreateOp, job: JobRecord, created: dict[str, set[str]]) -> None:
    parent_type = _PARENT_TYPE.get(op.entity_type)
    parent = op.reparent_id if op.entity_type == "copy" else op.parent_id
    if parent_type is None or parent is None or parent.startswith("{result="):
        return  # a batch reference names a create of the same request
    if parent not in created.get(parent_type, set()):
        raise ParentMismatch(
            f"A {op.entity_type} of job {job.job_id} must name one of the job's {parent_type}s "
            f"({parent} is not one)"
        )


async def plan(
    gw: Gateway,
    job: JobRecord,
    ops: Sequence[CreateOp],
    *,
    named_slot: int | None,
    request_id: str,
    token: str | None,
) -> JobPlan:
    """Reserve every slot the ops need, or say which ops are refused and why."""
    result = JobPlan(job)
    created: dict[str, set[str]] = defaultdict(set)
    for slot in await gw.jobs.slots(job.job_id):
        if slot.state is SlotState.CREATED and slot.graph_id:
            created[slot.entity_type].add(slot.graph_id)
    wants: dict[int, list[SlotWant]] = {}
    for op in ops:
        try:
            _check_parent(op, job, created)
            if op.entity_type == "copy":
                wants[op.index] = await _copy_wants(gw, job, op, created, token)
            else:
                wants[op.index] = [SlotWant(op.entity_type, named_slot)]
        except GatewayError as exc:
            result.refused[op.index] = exc
    flat = [w for index in wants for w in wants[index]]
    got = (
        await gw.jobs.reserve_slots(job.job_id, flat, request_id=request_id, now=_now(gw))
        if flat
        else []
    )
    release: list[SlotOutcome] = []
    position = 0
    for op in ops:
        if op.index not in wants:
            continue
        mine: list[Reservation] = got[position : position + len(wants[op.index])]
        position += len(wants[op.index])
        slots = [
            (w.entity_type, r.slot_no)
            for w, r in zip(wants[op.index], mine, strict=True)
            if isinstance(r, Reserved)
        ]
        blocker = next((r for r in mine if not isinstance(r, Reserved)), None)
        if blocker is None:
            result.send.append(op)
            result.held[op.index] = slots
            for kind, _ in slots:
                gw.metrics.slot_transitions.labels(kind, SlotState.RESERVED).inc()
            continue
        release.extend(
            SlotOutcome(job.job_id, kind, no, request_id, SlotState.FREE) for kind, no in slots
        )
        match blocker:
            case AlreadyCreated(slot_no=slot_no, graph_id=graph_id):
                result.replay = (slot_no, graph_id)
            case SlotBusy(slot_no=slot_no):
                result.refused[op.index] = RequestInProgress(
                    f"Slot {slot_no} of job {job.job_id} is being created by another request"
                )
            case NoCapacity(entity_type=kind, expected=expected, created=done, in_flight=flying):
                gw.metrics.cap_rejections.labels(kind).inc()
                result.refused[op.index] = CapExceeded(
                    f"Job {job.job_id} expects {expected} {kind}(s): {done} created and "
                    f"{flying} in flight; nothing was sent",
                    error_data={
                        "entity_type": kind,
                        "expected": expected,
                        "created": done,
                        "in_flight": flying,
                    },
                )
    if release:
        await gw.jobs.complete_slots(release, now=_now(gw))
    caps = [exc for exc in result.refused.values() if isinstance(exc, CapExceeded)]
    if caps:
        await _audit_caps(gw, job, caps, request_id)
    return result


async def _audit_caps(
    gw: Gateway, job: JobRecord, refused: list[CapExceeded], request_id: str
) -> None:
    """Cap rejections are safety actions: one audit row per refused create. An audit store
    that is down does not turn the refusal into another error (it is logged)."""
    entries = [
        AuditEntry(
            action=AuditAction.CAP_REJECTION,
            outcome=AuditOutcome.OK,
            job_id=job.job_id,
            reason=exc.message,
            detail={**(exc.error_data or {}), "request_id": request_id},
        )
        for exc in refused
    ]
    try:
        await gw.audit.record_audit(entries, now=_now(gw))
    except StoreError as err:
        logs.event("audit_not_recorded", job_id=job.job_id, error=err.message, level=40)


def refused_entry(exc: GatewayError, request_id: str) -> dict[str, Any]:
    """A batch entry for an op the gateway refused (it never reached Graph)."""
    return own_entry(
        exc.status,
        exc.envelope(request_id),
        {"Content-Type": "application/json; charset=UTF-8", "X-Gateway-Request-Id": request_id},
    )


def slot_outcomes(
    result: JobPlan, outcomes: dict[int, OpOutcome], request_id: str
) -> list[SlotOutcome]:
    """What every held slot becomes: created (its id), free (nothing happened) or unknown."""
    out: list[SlotOutcome] = []
    job_id = result.job.job_id
    for index, held in result.held.items():
        outcome = outcomes.get(index)
        if isinstance(outcome, Created):
            ids = {held[0][0]: [outcome.graph_id]}
            for child in outcome.children:
                ids.setdefault(child.entity_type, []).append(child.graph_id)
            for kind, no in held:
                graph_id = ids.get(kind, []).pop(0) if ids.get(kind) else None
                state = SlotState.CREATED if graph_id else SlotState.FREE
                out.append(SlotOutcome(job_id, kind, no, request_id, state, graph_id))
        elif isinstance(outcome, Failed):
            out.extend(SlotOutcome(job_id, k, no, request_id, SlotState.FREE) for k, no in held)
        else:
            out.extend(SlotOutcome(job_id, k, no, request_id, SlotState.UNKNOWN) for k, no in held)
    return out


# The count and the intent write take milliseconds: a lease held longer is a holder that died.
CAPS_LEASE_SECONDS = 10.0


@contextlib.asynccontextmanager
async def parent_caps(gw: Gateway, ops: Sequence[CreateOp]) -> AsyncIterator[None]:
    """Zero-change caps: refuse (409 cap_exceeded, nothing sent) an ad set past
    `adsets_per_campaign` or an ad past `ads_per_adset`; hold the parents' locks until the
    caller has written its intents."""
    caps = gw.policy.caps
    limits = {"adset": caps.adsets_per_campaign, "ad": caps.ads_per_adset}
    wanted: dict[tuple[str, str], int] = defaultdict(int)
    for op in ops:
        if limits.get(op.entity_type) and op.parent_id and not op.parent_id.startswith("{"):
            wanted[(op.parent_id, op.entity_type)] += 1
    if not wanted:
        yield
        return
    async with contextlib.AsyncExitStack() as stack:
        # The count and the intent it allows are one step across the gateway (its replicas
        # too); parents in a fixed order, so two batches never wait for each other's.
        for parent in sorted({parent for parent, _ in wanted}):
            await stack.enter_async_context(
                one_at_a_time(
                    gw, f"caps:{parent}", ttl_seconds=CAPS_LEASE_SECONDS, poll_seconds=0.005
                )
            )
        for (parent, kind), count in wanted.items():
            live = await gw.ledger.count_live([parent], kind)
            if live + count > limits[kind]:
                gw.metrics.cap_rejections.labels(kind).inc()
                raise CapExceeded(
                    f"{parent} has {live} {kind}(s) created or in flight; the cap is "
                    f"{limits[kind]}; nothing was sent",
                    error_data={
                        "parent_id": parent,
                        "entity_type": kind,
                        "live": live,
                        "cap": limits[kind],
                    },
                )
        yield
