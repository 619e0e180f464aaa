"""Post-creation verification of a job against Graph (the decisions: gateway.core.postcheck).

Reads every entity the job's slots hold by id, in batches of up to 50 GETs (one answer per
entity, so an entity Graph no longer has does not sink the others, as `?ids=` would), and lists
the job's campaign's ad sets and ads created since the job began. Every read goes through the
throttle gate and the circuit breaker (gateway.attempt). The report is logged, counted and
returned; the caller (admin API) keeps it with the job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from multidict import CIMultiDict

from gateway import logs
from gateway.attempt import Tally, read_retried, refusal
from gateway.context import Gateway
from gateway.core.postcheck import Recorded, Report, Seen, compare
from gateway.errors import GatewayError, GraphRefused
from gateway.lookup import children
from gateway.model import (
    AuditAction,
    AuditEntry,
    AuditOutcome,
    JobQuery,
    JobRecord,
    JobStatus,
    SlotState,
)
from gateway.repair import repair_and_record

BATCH = 50
# Fields per type (asking an ad set for `adset_id` is an error on Graph).
FIELDS = {
    "campaign": "id,name,effective_status",
    "adset": "id,name,effective_status,campaign_id",
    "ad": "id,name,effective_status,campaign_id,adset_id",
}
# Graph's created_time has one-second precision: list from a little before the job began.
_SKEW_SECONDS = 5
# Jobs completed this long ago or longer are not verified automatically any more.
_LOOKBACK_SECONDS = 24 * 3600


def _seen(doc: Any) -> Seen | None:
    if not isinstance(doc, dict) or not doc.get("id"):
        return None
    if doc.get("adset_id"):
        kind, parent = "ad", str(doc["adset_id"])
    elif doc.get("campaign_id"):
        kind, parent = "adset", str(doc["campaign_id"])
    else:
        kind, parent = "campaign", None
    status = doc.get("effective_status")
    name = doc.get("name")
    return Seen(
        str(doc["id"]),
        kind,
        parent,
        str(status) if status else None,
        str(name) if name is not None else None,
    )


async def _read_batch(
    gw: Gateway, wanted: Sequence[Recorded], token: str, account: str, tally: Tally
) -> dict[str, Seen | None]:
    ids = [r.graph_id for r in wanted]
    ops = [
        {"method": "GET", "relative_url": f"{r.graph_id}?fields={FIELDS[r.entity_type]}"}
        for r in wanted
    ]
    data = urlencode({"batch": json.dumps(ops), "access_token": token}).encode()
    headers = CIMultiDict({"Content-Type": "application/x-www-form-urlencoded"})
    reply = await read_retried(
        gw,
        tally,
        method="POST",
        url=f"{gw.settings.upstream}/",
        headers=headers,
        data=data,
        account=account,
        kind="verify",
    )
    if not isinstance(reply.doc, list) or len(reply.doc) != len(ids):
        raise GraphRefused(refusal(reply, "a batch of reads"), reply.error)
    out: dict[str, Seen | None] = {}
    for graph_id, entry in zip(ids, reply.doc, strict=True):
        if not isinstance(entry, dict) or entry.get("code") != 200:
            out[graph_id] = None  # an error entry: Graph has no such entity (or not for us)
            continue
        try:
            out[graph_id] = _seen(json.loads(entry.get("body") or "null"))
        except ValueError:
            out[graph_id] = None
    return out


async def verify_job(gw: Gateway, job: JobRecord, token: str) -> Report:
    """Compare the job's created slots with Graph."""
    slots = [
        s for s in await gw.jobs.slots(job.job_id) if s.state is SlotState.CREATED and s.graph_id
    ]
    campaign = next((s.graph_id for s in slots if s.entity_type == "campaign"), None)
    recorded = []
    for slot in slots:
        assert slot.graph_id is not None  # noqa: S101  # filtered above
        parent = campaign if slot.entity_type == "adset" else None
        if slot.entity_type == "ad":
            row = await gw.ledger.find_by_graph_id(slot.graph_id)
            parent = row.parent_id if row is not None and row.entity_type == "ad" else None
        if slot.entity_type in FIELDS:
            recorded.append(Recorded(slot.graph_id, slot.entity_type, slot.slot_no, parent))
    tally = Tally.start(gw)
    by_id: dict[str, Seen | None] = {}
    for start in range(0, len(recorded), BATCH):
        chunk = recorded[start : start + BATCH]
        by_id.update(await _read_batch(gw, chunk, token, job.account_id, tally))
    listed: list[Seen] = []
    if campaign is not None:
        since = int(job.created_at.timestamp()) - _SKEW_SECONDS
        for edge, kind in (("adsets", "adset"), ("ads", "ad")):
            items = await children(
                gw,
                token,
                f"{campaign}/{edge}",
                FIELDS[kind],
                None,
                account=job.account_id,
                since=since,
            )
            listed.extend(s for s in (_seen(i) for i in items) if s is not None)
    report = compare(recorded, by_id, listed)
    for kind, found in (
        ("missing", report.missing),
        ("untracked", report.untracked),
        ("mismatched", report.mismatched),
    ):
        if found:
            gw.metrics.discrepancies.labels(kind).inc(len(found))
    logs.event(
        "job_verified",
        job_id=job.job_id,
        checked=report.checked,
        missing=len(report.missing),
        untracked=len(report.untracked),
        mismatched=len(report.mismatched),
        level=20 if report.clean else 30,
    )
    return report


async def verify_and_record(gw: Gateway, job: JobRecord, token: str, *, actor: str) -> Report:
    """`verify_job`, with its report kept in the audit trail."""
    report = await verify_job(gw, job, token)
    counts = report.to_dict()["counts"]
    await gw.audit.record_audit(
        [
            AuditEntry(
                action=AuditAction.VERIFICATION,
                outcome=AuditOutcome.OK if report.clean else AuditOutcome.FAILED,
                job_id=job.job_id,
                reason=", ".join(f"{v} {k}" for k, v in counts.items()),
                detail=report.to_dict(),
                actor=actor,
            )
        ],
        now=datetime.fromtimestamp(gw.clock.now(), UTC),
    )
    return report


async def verify_completed(gw: Gateway) -> int:
    """The automatic verification (`[verification] after_completion`): every job completed in
    the last day that has no verification yet is verified (and repaired when
    `repair_after_completion`), with the caller's token while this process holds it, else
    GATEWAY_ROLLBACK_TOKEN; a job without either waits. Returns how many were verified."""
    policy = gw.policy.verification
    if not policy.after_completion:
        return 0
    since = datetime.fromtimestamp(gw.clock.now() - _LOOKBACK_SECONDS, UTC)
    page = await gw.jobs.list_jobs(JobQuery(status=JobStatus.COMPLETED, since=since, limit=100))
    done = 0
    for job in page.items:
        token = gw.token_for(job.caller)
        seen = await gw.audit.audit(job_id=job.job_id, action=AuditAction.VERIFICATION, limit=1)
        if token is None or seen.items:
            continue
        try:
            report = await verify_and_record(gw, job, token, actor="gateway")
            if policy.repair_after_completion and not report.clean:
                await repair_and_record(gw, job, report, actor="gateway", token=token)
        except GatewayError as exc:
            logs.event("job_verification_failed", job_id=job.job_id, error=exc.message, level=30)
            continue
        done += 1
    return done
