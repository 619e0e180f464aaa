"""Repair a job after post-creation verification (issue 6, item 1).

Three moves, each slot change an atomic compare-and-set (`JobStore.repair_slot`), so a repair
racing a create or another repair never counts an entity twice or past the cap:

- **missing** (recorded, gone from Graph): the slot is freed and the ledger row says why;
- **untracked** (on Graph under the job's campaign, not recorded): adopted into a free slot of
  its type and recorded in the ledger (so rollback finds it); with no free slot left it is
  reported, never counted past the job's cap;
- **re-create**: a missing entity whose slot is still free after that is made again from the
  parameters its create's ledger row kept (`Intent.params`, never a token), through this
  gateway's own proxy port with the job and slot named: the normal safe path.

Missing entities are freed first, so an untracked one can fill the slot a vanished one left
before anything new is created.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

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


async def repair_job(
    gw: Gateway, job: JobRecord, report: Report, token: str | None = None
) -> dict[str, Any]:
    at = datetime.fromtimestamp(gw.clock.now(), UTC)
    freed: list[dict[str, Any]] = []
    asked: dict[str, Mapping[str, Any]] = {}  # what each missing entity's create asked for
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
        if row is not None and row.params:
            asked[finding.graph_id] = row.params
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
    recreated, not_recreated = await _recreate(gw, job, freed, asked, token)
    result = {
        "freed": freed,
        "adopted": adopted,
        "not_adopted": left,
        "recreated": recreated,
        "not_recreated": not_recreated,
    }
    for kind in ("freed", "adopted", "recreated"):
        if result[kind]:
            gw.metrics.repairs.labels(kind).inc(len(result[kind]))
    logs.event(
        "job_repaired",
        job_id=job.job_id,
        freed=len(freed),
        adopted=len(adopted),
        not_adopted=len(left),
        recreated=len(recreated),
        not_recreated=len(not_recreated),
    )
    return result


async def repair_and_record(
    gw: Gateway, job: JobRecord, report: Report, *, actor: str, token: str | None = None
) -> dict[str, Any]:
    """`repair_job`, with what it did kept in the audit trail."""
    result = await repair_job(gw, job, report, token)
    counts = (
        f"{len(result['freed'])} freed, {len(result['adopted'])} adopted, "
        f"{len(result['recreated'])} re-created"
    )
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


_ORDER = {"campaign": 0, "adset": 1, "ad": 2}


async def _recreate(
    gw: Gateway,
    job: JobRecord,
    freed: list[dict[str, Any]],
    asked: Mapping[str, Mapping[str, Any]],
    token: str | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Make the missing entities whose slots are still free again, through this gateway's
    own proxy port: the normal safe create path (intent first, the job's slot named, retries
    and look-ups). Parents first; a re-created parent's new id replaces its old one in its
    children's parameters."""
    if not freed:
        return [], []
    still_free = {
        (s.entity_type, s.slot_no)
        for s in await gw.jobs.slots(job.job_id)
        if s.state is SlotState.FREE
    }
    new_ids: dict[str, str] = {}
    done: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for entry in sorted(freed, key=lambda e: _ORDER.get(e["entity_type"], 9)):
        if (entry["entity_type"], entry["slot_no"]) not in still_free:
            continue  # an untracked entity was adopted into it
        spec = asked.get(entry["graph_id"])
        if not spec or not token or not gw.self_url:
            why = "no create parameters on record" if not spec else "no Graph token"
            failed.append({**entry, "why": why})
            continue
        params = {
            k: new_ids.get(v, v) if isinstance(v, str) else v
            for k, v in dict(spec.get("params") or {}).items()
        }
        url = f"{gw.self_url}/{spec['path']}"
        headers = {
            "X-Gateway-Job": job.job_id,
            "X-Gateway-Slot": str(entry["slot_no"]),
            "Authorization": f"Bearer {token}",
            # gw.session sets no Content-Type by itself (it forwards callers' headers as is).
            "Content-Type": "application/json",
        }
        try:
            async with gw.session.post(url, json=params, headers=headers) as resp:
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            failed.append({**entry, "why": f"the create could not be sent: {exc}"})
            continue
        new_id = _created_id(answer) if resp.status == 200 else None
        if new_id is None:
            error = answer.get("error", {}) if isinstance(answer, dict) else {}
            message = error.get("message") if isinstance(error, dict) else None
            failed.append({**entry, "why": f"HTTP {resp.status}: {message or answer}"})
            continue
        new_ids[entry["graph_id"]] = new_id
        done.append({**entry, "new_graph_id": new_id})
    return done, failed


def _created_id(answer: Any) -> str | None:
    if not isinstance(answer, dict):
        return None
    for key in ("id", "copied_adset_id", "copied_campaign_id", "copied_ad_id"):
        if answer.get(key):
            return str(answer[key])
    return None
