"""The recovery worker: resolves `sending` and `unknown` ledger rows by looking on Graph.

At start (after a crash, every `sending` row is an attempt nobody is waiting for) and then
every `[recovery] interval_seconds`: rows are grouped by where their entity would appear,
the parent's children are listed on Graph, and gateway.core.reconcile decides which entity
each row became. Adopted rows become `created` (their job slot too); rows Graph shows nothing
for, long enough after the attempt, become `failed` and free their slot. Nothing is ever
re-sent from here. Reads use the caller's token if this process still holds it in memory,
else GATEWAY_ROLLBACK_TOKEN; without either a row waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway import logs, lookup, notify, postcheck
from gateway.context import Gateway
from gateway.core.reconcile import Absent, Adopt, match
from gateway.errors import GatewayError
from gateway.model import (
    Discovered,
    EntityRecord,
    EntityState,
    Outcome,
    SlotState,
)


@dataclass
class RecoveryReport:
    adopted: int = 0
    absent: int = 0
    waiting: int = 0
    reaped: int = 0  # idempotency records past their retention, deleted
    skipped: dict[str, int] = field(default_factory=dict)


async def recover_once(gw: Gateway) -> RecoveryReport:
    """One pass over every unresolved row."""
    report = RecoveryReport()
    now = gw.clock.now()
    policy = gw.policy.recovery
    groups: dict[tuple[str, str, str | None, str], list[EntityRecord]] = defaultdict(list)
    busy: set[tuple[str, str, str | None, str]] = set()
    unresolved = await lookup.unresolved(gw)
    _gauge_unresolved(gw, unresolved, now)
    for row in unresolved:
        key = await lookup.group_key(gw, row)
        if key is None:
            report.skipped["not_listable"] = report.skipped.get("not_listable", 0) + 1
            continue
        full_key = (*key, row.caller)
        created = row.created_at.timestamp()
        # With one process (SQLite), what was sent before it started is nobody's any more.
        orphaned = gw.single_process and created < gw.started_at
        # A row sent lately may still be in flight, and one its request is reconciling (it
        # may send it again) is that request's: leave the whole group alone this round. This
        # process knows its own requests' rows; another replica's are recognised by a recent
        # update (a request ends within its deadline, shorter than in_flight_seconds).
        recent = not orphaned and now - row.updated_at.timestamp() < policy.in_flight_seconds
        in_flight = row.id in gw.reconciling or (
            recent and (row.state is EntityState.SENDING or not gw.single_process)
        )
        if in_flight:
            busy.add(full_key)  # a sibling may still be answered: decide the group later
        groups[full_key].append(row)
    for (path, fields, name, caller), rows in groups.items():
        if (path, fields, name, caller) in busy:
            report.waiting += len(rows)
            continue
        token = gw.token_for(caller)
        if token is None:
            report.skipped["no_token"] = report.skipped.get("no_token", 0) + len(rows)
            continue
        try:
            listed = await lookup.children(gw, token, path, fields, name)
        except GatewayError as exc:
            logs.event("recovery_lookup_failed", path=path, error=exc.message, level=30)
            gw.metrics.reconciliations.labels("worker", "failed").inc(len(rows))
            report.waiting += len(rows)
            continue
        await _decide(gw, rows, listed, now, report)
    await _free_orphaned_slots(gw, report)
    # Idempotency records past their retention go too (the reaper rides the same loop).
    report.reaped = await gw.idempotency.reap(now=datetime.fromtimestamp(now, UTC))
    if report.adopted or report.absent or report.reaped:
        logs.event("recovery", **{k: v for k, v in vars(report).items() if v})
    return report


def _gauge_unresolved(gw: Gateway, rows: list[EntityRecord], now: float) -> None:
    for state in (EntityState.SENDING, EntityState.UNKNOWN):
        gw.metrics.unresolved.labels(state.value).set(sum(r.state is state for r in rows))
    oldest = min((r.created_at.timestamp() for r in rows), default=now)
    gw.metrics.unresolved_oldest.set(max(0.0, now - oldest))


async def _free_orphaned_slots(gw: Gateway, report: RecoveryReport) -> None:
    """Slots reserved by a request that died before writing its intent: nothing was sent for
    them (the intent comes first), so they are free again."""
    policy = gw.policy.recovery
    cutoff = datetime.fromtimestamp(gw.clock.now() - policy.in_flight_seconds, UTC)
    at = datetime.fromtimestamp(gw.clock.now(), UTC)
    for slot in await gw.jobs.held_slots(updated_before=cutoff):
        rows = await gw.ledger.request_entities(slot.request_id or "")
        if any(r.job_id == slot.job_id for r in rows):
            continue  # its intent exists: the row decides the slot
        await gw.jobs.resolve_slot(
            slot.job_id, slot.entity_type, slot.slot_no, graph_id=None, now=at
        )
        report.absent += 1
        gw.metrics.reconciliations.labels("worker", "orphaned_slot").inc()


async def _decide(
    gw: Gateway,
    rows: list[EntityRecord],
    listed: list[dict[str, Any]],
    now: float,
    report: RecoveryReport,
) -> None:
    policy = gw.policy.recovery
    candidates, known = await lookup.candidates(gw, listed)
    pending = lookup.pending_of(rows)
    decisions = match(
        pending,
        candidates,
        known,
        now=now,
        clock_skew=policy.clock_skew_seconds,
        give_up_after=policy.give_up_seconds,
    )
    by_id = {r.id: r for r in rows}
    at = datetime.fromtimestamp(now, UTC)
    for decision in decisions:
        row = by_id[decision.entity_id]
        source = (
            await gw.ledger.find_by_graph_id(row.parent_id or "")
            if row.entity_type == "copy"
            else None
        )
        if isinstance(decision, Adopt):
            kind = source.entity_type if source else None
            outcome = Outcome(row.id, EntityState.CREATED, decision.graph_id, entity_type=kind)
            graph_id: str | None = decision.graph_id
            report.adopted += 1
        elif isinstance(decision, Absent):
            error = {"status": None, "code": None, "message": "reconciled: not on Graph"}
            outcome = Outcome(row.id, EntityState.FAILED, error=error)
            graph_id = None
            report.absent += 1
        else:
            report.waiting += 1
            continue
        await gw.ledger.settle([outcome], now=at)
        gw.metrics.reconciliations.labels("worker", "adopted" if graph_id else "absent").inc()
        children: list[tuple[str, str]] = []
        if source is not None and graph_id is not None:
            children = await _copied_children(gw, row, source.entity_type, graph_id, at)
        if row.job_id and row.slot_no is not None:
            slot_type = source.entity_type if source else row.entity_type
            await gw.jobs.resolve_slot(
                row.job_id, slot_type, row.slot_no, graph_id=graph_id, now=at
            )
            await _resolve_child_slots(gw, row, slot_type, children, at)


async def _copied_children(
    gw: Gateway, row: EntityRecord, source_type: str, copy_id: str, at: datetime
) -> list[tuple[str, str]]:
    """A deep copy found on Graph brought its children along: record them too (invariant 7).
    Returns (entity type, graph id) of each."""
    token = gw.token_for(row.caller)
    found: list[tuple[str, str]] = []
    if token is None:
        return found
    for edge in lookup.CHILD_EDGES.get(source_type, ()):
        try:
            items = await lookup.children(gw, token, f"{copy_id}/{edge}", "id", None)
        except GatewayError:
            continue
        kind = "adset" if edge == "adsets" else "ad"
        found.extend((kind, str(i["id"])) for i in items if i.get("id"))
    new = [
        Discovered(
            request_id=row.request_id,
            op_index=(row.op_index + 1) * 1000 + n,
            caller=row.caller,
            account_id=row.account_id,
            entity_type=kind,
            graph_id=graph_id,
            job_id=row.job_id,
        )
        for n, (kind, graph_id) in enumerate(found)
        if await gw.ledger.find_by_graph_id(graph_id) is None
    ]
    if new:
        await gw.ledger.add_entities(new, now=at)
    return found


async def _resolve_child_slots(
    gw: Gateway, row: EntityRecord, own_type: str, children: list[tuple[str, str]], at: datetime
) -> None:
    """The other slots the copy's request held (its children's) take the children found."""
    if row.job_id is None:
        return
    held = [
        s
        for s in await gw.jobs.slots(row.job_id)
        if s.request_id == row.request_id
        and s.state in (SlotState.UNKNOWN, SlotState.RESERVED)
        and (s.entity_type, s.slot_no) != (own_type, row.slot_no)
    ]
    by_type: dict[str, list[str]] = defaultdict(list)
    for kind, graph_id in children:
        by_type[kind].append(graph_id)
    for slot in held:
        ids = by_type.get(slot.entity_type)
        await gw.jobs.resolve_slot(
            slot.job_id,
            slot.entity_type,
            slot.slot_no,
            graph_id=ids.pop(0) if ids else None,
            now=at,
        )


@asynccontextmanager
async def recovery_worker(gw: Gateway) -> AsyncIterator[None]:
    """Run `recover_once` at start and every interval until the context exits."""

    async def loop() -> None:
        while True:
            try:
                await recover_once(gw)
                # Completed jobs get their post-creation verification here, off the create path.
                await postcheck.verify_completed(gw)
                await notify.send_due(gw)
            except Exception as exc:  # noqa: BLE001  # one bad pass must not end the worker
                logs.event("recovery_failed", error=repr(exc), level=40, exc_info=True)
            await gw.clock.sleep(gw.policy.recovery.interval_seconds)

    # One long-lived task owned by this context: cancelled and awaited on exit.
    task = asyncio.get_running_loop().create_task(loop(), name="gateway-recovery")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
