"""Rollback: delete a job's (or a campaign tree's) entities on Graph, children first, audited.

Shell: gathers the ledger rows, slots and earlier runs' audit, lets gateway.core.rollback plan,
and executes the plan batch by batch. Each batch: one read of every entity's fields (the
backup), then one batch call of DELETEs; every call goes through `try_once` (throttle gate,
circuit breaker, deadline) and transient failures are retried with `may_retry`. An entity
Graph shows deleted (or has no longer) is done; a failed step is recorded and the rest go on;
one audit row per step, with its backup. Executing again plans from the ledger minus what the
audit shows done, so a crashed or partly failed rollback is finished by running it again and a
finished one is a no-op.

Where a deletion is recorded: in the audit, not in the ledger. The ledger is the write-ahead
record of creates, and `created` is what caps, recovery and verification take as settled; a
`deleted` state would need a migration of entities and a look at each of those readers, and
the audit must hold the step anyway (its backup). Graph is the truth either way: every step
reads the entity before deleting it, so a step done but not yet audited (a crash between the
delete and its audit row) is seen deleted and never sent twice.

The Graph token (the body's `access_token`, else GATEWAY_ROLLBACK_TOKEN) is used for the calls
only: never stored, logged or put in an audit row.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from gateway import logs
from gateway.context import Gateway
from gateway.core import rollback as core
from gateway.errors import BadRequest, JobNotFound
from gateway.model import (
    AuditAction,
    AuditEntry,
    AuditOutcome,
    CreateSource,
    EntityQuery,
    EntityRecord,
    JobRecord,
    JobStatus,
    SlotRecord,
)
from gateway.rollback_graph import BatchRunner, StepResult
from gateway.serial import one_at_a_time

DEFAULT_ACTOR = "admin"
# An operator's reason goes into every audit row of the run: a sentence or two, not a document.
MAX_REASON = 1000
_PAGE = 500


class CampaignNotRecorded(LookupError):
    """The ledger holds no row for the campaign: there is no recorded tree to roll back."""


class PlanChanged(Exception):
    """Executing was pinned to a dry run's plan (`plan_id`) and the plan is no longer that:
    something was created (or deleted) since the operator looked. Nothing was deleted."""

    def __init__(self, expected: str, planned: Planned) -> None:
        super().__init__(
            f"The rollback plan changed since the dry run (plan {expected}, now "
            f"{plan_id(planned)} with {len(planned.plan.steps)} step(s)): look at it again; "
            "nothing was deleted"
        )
        self.planned = planned


def plan_id(planned: Planned) -> str:
    """A short fingerprint of a plan's steps (their ids, in order): what a dry run showed."""
    text = "\n".join(f"{s.entity_type}:{s.graph_id}" for s in planned.plan.steps)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Planned:
    """What a rollback would do now: the target and the plan."""

    plan: core.Plan
    job: JobRecord | None = None  # a job's rollback
    campaign_id: str | None = None  # the campaign tree's, or the job's campaign when known
    account_id: str | None = None

    @property
    def job_id(self) -> str | None:
        return self.job.job_id if self.job is not None else None


@dataclass(frozen=True)
class Report:
    planned: Planned
    run: str  # groups the audit rows of one execution
    results: tuple[StepResult, ...] = ()
    status: JobStatus | None = None  # the job's status afterwards (None for a campaign tree)
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(r.outcome != AuditOutcome.FAILED for r in self.results)


# --------------------------------------------------------------------------- planning


async def plan(
    gw: Gateway, *, job_id: str | None = None, campaign_id: str | None = None
) -> Planned:
    """The plan for a job (*job_id*) or a campaign tree recorded without one (*campaign_id*).
    Changes nothing. Raises JobNotFound, CampaignNotRecorded, StoreError."""
    if (job_id is None) == (campaign_id is None):
        raise ValueError("plan a job or a campaign, one of them")
    if job_id is not None:
        job = await gw.jobs.job(job_id)
        if job is None:
            raise JobNotFound(f"No job {job_id!r}")
        rows = await _job_rows(gw, job_id)
        slots = await gw.jobs.slots(job_id)
        done = await _done(gw, job_id=job_id)
        the_plan = core.plan(rows, slots=slots, done=done, default_account=job.account_id)
        return Planned(
            the_plan, job=job, campaign_id=_campaign_of(slots), account_id=job.account_id
        )
    assert campaign_id is not None  # noqa: S101 - checked above; narrows the type
    anchor = await gw.ledger.find_by_graph_id(campaign_id)
    if anchor is None or anchor.account_id is None or anchor.entity_type != "campaign":
        raise CampaignNotRecorded(f"The ledger holds no campaign {campaign_id!r}")
    account_rows = await _all_rows(gw, EntityQuery(account_id=anchor.account_id, limit=_PAGE))
    tree = core.campaign_tree(account_rows, campaign_id)
    done = await _done(gw, campaign_id=campaign_id)
    return Planned(
        core.plan(tree, done=done, default_account=anchor.account_id),
        campaign_id=campaign_id,
        account_id=anchor.account_id,
    )


async def _all_rows(gw: Gateway, query: EntityQuery) -> list[EntityRecord]:
    rows: list[EntityRecord] = []
    while True:
        page = await gw.ledger.entities(query)
        rows.extend(page.items)
        if page.next_before_id is None:
            return rows
        query = replace(query, before_id=page.next_before_id)


async def _job_rows(gw: Gateway, job_id: str) -> list[EntityRecord]:
    """The job's rows, and the rows its copies' answers named: those are recorded under the
    copy's request without the job (gateway/settle.py), so they are read by request."""
    rows = {r.id: r for r in await _all_rows(gw, EntityQuery(job_id=job_id, limit=_PAGE))}
    copying = sorted({r.request_id for r in rows.values() if r.source is CreateSource.COPY})
    for request_id in copying:
        for row in await gw.ledger.request_entities(request_id):
            rows.setdefault(row.id, row)
    return list(rows.values())


async def _done(
    gw: Gateway, *, job_id: str | None = None, campaign_id: str | None = None
) -> frozenset[str]:
    """Graph ids earlier runs for this job or campaign deleted (or found deleted)."""
    done: set[str] = set()
    before = None
    while True:
        page = await gw.audit.audit(
            job_id=job_id,
            campaign_id=campaign_id,
            action=AuditAction.ROLLBACK_STEP,
            before_id=before,
            limit=_PAGE,
        )
        done |= core.done_ids(page.items)
        if page.next_before_id is None:
            return frozenset(done)
        before = page.next_before_id


def _campaign_of(slots: Sequence[SlotRecord]) -> str | None:
    return next((s.graph_id for s in slots if s.entity_type == "campaign" and s.graph_id), None)


# --------------------------------------------------------------------------- executing


async def execute(
    gw: Gateway,
    *,
    job_id: str | None = None,
    campaign_id: str | None = None,
    reason: str,
    token: str | None,
    actor: str = DEFAULT_ACTOR,
    expected_plan: str | None = None,
) -> Report:
    """Run the rollback of a job or a campaign tree (see the module docstring). Raises
    BadRequest without a reason or a Graph token, JobNotFound, CampaignNotRecorded, and
    StoreError when the ledger cannot be read or the audit written; PlanChanged (nothing
    deleted) when *expected_plan* is given and the plan is no longer the one it names."""
    reason = reason.strip()
    if not reason:
        raise BadRequest("A rollback needs a reason (it goes into every audit row)")
    token = token or gw.settings.rollback_token
    if not token:
        raise BadRequest("No Graph token: pass access_token or set GATEWAY_ROLLBACK_TOKEN")
    # One execution per target at a time: a second one waits and then plans from what the
    # first left. In this process by a lock; across replicas by a Redis lease when Redis is
    # configured (StoreUnavailable, nothing deleted, when it cannot be had).
    target = f"job:{job_id}" if job_id is not None else f"campaign:{campaign_id}"
    async with one_at_a_time(gw, f"rollback:{target}"):
        return await _execute(gw, job_id, campaign_id, reason, token, actor, expected_plan)


async def _execute(
    gw: Gateway,
    job_id: str | None,
    campaign_id: str | None,
    reason: str,
    token: str,
    actor: str,
    expected_plan: str | None,
) -> Report:
    planned = await plan(gw, job_id=job_id, campaign_id=campaign_id)
    if expected_plan is not None and expected_plan != plan_id(planned):
        raise PlanChanged(expected_plan, planned)
    run = secrets.token_hex(8)
    ctx = _Run(gw, planned, run, reason, actor)
    runner = BatchRunner(
        gw,
        token,
        planned.account_id,
        # A job's entities are the job's wherever they are; a campaign tree recorded in the
        # ledger is checked against Graph (a re-parented copy is not in the tree).
        campaign_check=planned.campaign_id if planned.job is None else None,
    )
    the_plan = planned.plan
    await ctx.audit(
        AuditAction.ROLLBACK_PLAN,
        AuditOutcome.OK,
        detail={
            "steps": [_step_json(s) for s in the_plan.steps],
            "done": list(the_plan.done),
            "kept": [_kept_json(k) for k in the_plan.kept],
        },
    )
    logs.event(
        "rollback_started",
        run=run,
        job_id=planned.job_id,
        campaign_id=planned.campaign_id,
        steps=len(the_plan.steps),
        done=len(the_plan.done),
        actor=actor,
        reason=reason,
        level=logging.WARNING,
    )
    if planned.job is not None and the_plan.steps:
        # Closed before the first delete: no create of the job may land while it is undone.
        await gw.jobs.set_job_status(
            planned.job.job_id, JobStatus.PARTIALLY_ROLLED_BACK, now=_now(gw)
        )
    results: list[StepResult] = []
    for batch in the_plan.batches:
        done = await runner.batch(batch)
        results.extend(done)
        await ctx.audit_steps(done)
    status = None
    if planned.job is not None:
        status = core.final_status((r.outcome for r in results), the_plan.kept)
        await gw.jobs.set_job_status(planned.job.job_id, status, now=_now(gw))
    counts = {o.value: 0 for o in _STEP_OUTCOMES}
    for r in results:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    report = Report(planned, run, tuple(results), status, counts)
    await ctx.audit(
        AuditAction.ROLLBACK,
        AuditOutcome.OK if report.complete else AuditOutcome.PARTIAL,
        detail={"counts": counts, "status": status.value if status else None},
    )
    logs.event(
        "rollback_finished",
        run=run,
        job_id=planned.job_id,
        campaign_id=planned.campaign_id,
        status=status.value if status else None,
        level=logging.WARNING if report.complete else logging.ERROR,
        counts=counts,
    )
    return report


_STEP_OUTCOMES = (
    AuditOutcome.OK,
    AuditOutcome.ALREADY_DELETED,
    AuditOutcome.FAILED,
    AuditOutcome.SKIPPED,
)


def _now(gw: Gateway) -> datetime:
    return datetime.fromtimestamp(gw.clock.now(), UTC)


def _step_json(step: core.Step) -> dict[str, Any]:
    return {"graph_id": step.graph_id, "entity_type": step.entity_type, "batch": step.batch}


def _kept_json(kept: core.Kept) -> dict[str, Any]:
    return {
        "graph_id": kept.graph_id,
        "entity_type": kept.entity_type,
        "why": kept.why,
        "ledger_id": kept.ledger_id,
    }


@dataclass
class _Run:
    """One execution: its target, its reason, its audit rows."""

    gw: Gateway
    planned: Planned
    run: str
    reason: str
    actor: str

    async def audit(
        self, action: AuditAction, outcome: AuditOutcome, *, detail: Mapping[str, Any]
    ) -> None:
        entry = self._entry(action, outcome, None, {"run": self.run, **detail})
        await self.gw.audit.record_audit([entry], now=_now(self.gw))

    async def audit_steps(self, results: Sequence[StepResult]) -> None:
        entries = []
        for r in results:
            detail: dict[str, Any] = {
                "run": self.run,
                "batch": r.step.batch,
                "entity_type": r.step.entity_type,
                "backup": dict(r.backup) if r.backup is not None else None,
            }
            if r.error is not None:
                detail["error"] = dict(r.error)
            entries.append(
                self._entry(AuditAction.ROLLBACK_STEP, AuditOutcome(r.outcome), r.step, detail)
            )
            self.gw.metrics.rollback_steps.labels(r.outcome).inc()
            if r.outcome == AuditOutcome.FAILED:
                logs.event(
                    "rollback_step_failed",
                    run=self.run,
                    graph_id=r.step.graph_id,
                    entity_type=r.step.entity_type,
                    code=(r.error or {}).get("code"),
                    message=(r.error or {}).get("message"),
                    level=logging.ERROR,
                )
        await self.gw.audit.record_audit(entries, now=_now(self.gw))

    def _entry(
        self,
        action: AuditAction,
        outcome: AuditOutcome,
        step: core.Step | None,
        detail: Mapping[str, Any],
    ) -> AuditEntry:
        return AuditEntry(
            action=action,
            outcome=outcome,
            job_id=self.planned.job_id,
            campaign_id=self.planned.campaign_id,
            graph_id=step.graph_id if step is not None else None,
            reason=self.reason,
            detail=detail,
            actor=self.actor,
        )


# --------------------------------------------------------------------------- answers


def _target_json(planned: Planned) -> dict[str, Any]:
    return {
        "job_id": planned.job_id,
        "campaign_id": planned.campaign_id,
        "account_id": planned.account_id,
        "job_status": planned.job.status.value if planned.job is not None else None,
    }


def plan_json(planned: Planned) -> dict[str, Any]:
    """A dry run's answer: the steps left, in order, and what the rollback leaves alone."""
    the_plan = planned.plan
    return {
        **_target_json(planned),
        "dry_run": True,
        "plan_id": plan_id(planned),
        "steps": [_step_json(s) for s in the_plan.steps],
        "count": len(the_plan.steps),
        "batches": len(the_plan.batches),
        "done": list(the_plan.done),
        "kept": [_kept_json(k) for k in the_plan.kept],
    }


def report_json(report: Report) -> dict[str, Any]:
    """An execution's answer: every step's outcome, the failures, the job's status now."""
    steps = []
    for r in report.results:
        doc = {**_step_json(r.step), "outcome": r.outcome}
        if r.error is not None:
            doc["error"] = dict(r.error)
        steps.append(doc)
    planned = report.planned
    return {
        **_target_json(planned),
        "job_status": report.status.value if report.status is not None else None,
        "dry_run": False,
        "run": report.run,
        "outcome": AuditOutcome.OK.value if report.complete else AuditOutcome.PARTIAL.value,
        "counts": dict(report.counts),
        "steps": steps,
        "count": len(steps),
        "failures": [s for s in steps if s["outcome"] == AuditOutcome.FAILED],
        "done_before": list(planned.plan.done),
        "kept": [_kept_json(k) for k in planned.plan.kept],
    }
