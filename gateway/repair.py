"""Repair a job after post-creation verification (issue 6, item 1).

Two moves, each an atomic compare-and-set on one slot (`JobStore.repair_slot`), so a repair
racing a create or another repair never counts an entity twice or past the cap:

- **missing** (recorded, gone from Graph): the slot is freed and the ledger row says why; the
  next create of that type — the backend's re-drive through the normal safe path, with its
  own parameters — takes it. The gateway keeps no create bodies (they hold the caller's data
  and sometimes its token), so it does not re-create an entity by itself.
- **untracked** (on Graph under the job's campaign, not recorded): adopted into a free slot of
  its type and recorded in the ledger (so rollback finds it); with no free slot left it is
  reported, never counted past the job's cap.

Missing entities are freed first, so an untracked one can fill the slot a vanished one left.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from gateway import logs
from gateway.context import Gateway
from gateway.core.postcheck import Report
from gateway.model import (
    AuditAction,
    AuditEntry,
    AuditOutcome,
    Discovered,
    EntityState,
    JobRecord,
    Outcome,
    SlotState,
)

GONE = {"status": None, "code": None, "message": "not on Graph (post-creation verification)"}


async def repair_job(gw: Gateway, job: JobRecord, report: Report) -> dict[str, Any]:
    at = datetime.fromtimestamp(gw.clock.now(), UTC)
    freed: list[dict[str, Any]] = []
    adopted: list[dict[str, Any]] = []
    left: list[dict[str, Any]] = []
    for finding in report.missing:
        if finding.slot_no is None or finding.entity_type is None:
            continue
        if not await gw.jobs.repair_slot(
            job.job_id,
            finding.entity_type,
            finding.slot_no,
            was=finding.graph_id,
            graph_id=None,
            now=at,
        ):
            continue  # changed meanwhile: a later verification sees it as it is now
        row = await gw.ledger.find_by_graph_id(finding.graph_id)
        if row is not None and row.state is EntityState.CREATED:
            await gw.ledger.settle([Outcome(row.id, EntityState.FAILED, error=GONE)], now=at)
        freed.append(
            {
                "graph_id": finding.graph_id,
                "entity_type": finding.entity_type,
                "slot_no": finding.slot_no,
            }
        )
    free: dict[str, list[int]] = defaultdict(list)
    for slot in await gw.jobs.slots(job.job_id):
        if slot.state is SlotState.FREE:
            free[slot.entity_type].append(slot.slot_no)
    request_id = f"repair-{secrets.token_hex(8)}"
    found: list[Discovered] = []
    for finding in report.untracked:
        kind = finding.entity_type or ""
        entry = {"graph_id": finding.graph_id, "entity_type": kind}
        while free.get(kind):
            slot_no = free[kind].pop(0)
            if await gw.jobs.repair_slot(
                job.job_id, kind, slot_no, was=None, graph_id=finding.graph_id, now=at
            ):
                adopted.append({**entry, "slot_no": slot_no})
                found.append(
                    Discovered(
                        request_id=request_id,
                        op_index=len(found),
                        caller=job.caller,
                        account_id=job.account_id,
                        entity_type=kind,
                        graph_id=finding.graph_id,
                        job_id=job.job_id,
                    )
                )
                break
        else:
            left.append({**entry, "why": f"no free {kind} slot: the job's cap is reached"})
    if found:
        await gw.ledger.add_entities(found, now=at)
    result = {"freed": freed, "adopted": adopted, "not_adopted": left}
    for kind in ("freed", "adopted"):
        if result[kind]:
            gw.metrics.repairs.labels(kind).inc(len(result[kind]))
    logs.event(
        "job_repaired",
        job_id=job.job_id,
        freed=len(freed),
        adopted=len(adopted),
        not_adopted=len(left),
    )
    return result


async def repair_and_record(
    gw: Gateway, job: JobRecord, report: Report, *, actor: str
) -> dict[str, Any]:
    """`repair_job`, with what it did kept in the audit trail."""
    result = await repair_job(gw, job, report)
    counts = f"{len(result['freed'])} freed, {len(result['adopted'])} adopted"
    await gw.audit.record_audit(
        [
            AuditEntry(
                action=AuditAction.REPAIR,
                outcome=AuditOutcome.PARTIAL if result["not_adopted"] else AuditOutcome.OK,
                job_id=job.job_id,
                reason=f"{counts}, {len(result['not_adopted'])} not adopted",
                detail=result,
                actor=actor,
            )
        ],
        now=datetime.fromtimestamp(gw.clock.now(), UTC),
    )
    return result
