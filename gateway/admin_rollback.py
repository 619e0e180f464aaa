"""The admin API's rollback and audit endpoints (DESIGN.md §2 invariant 8, §3.3, §6
"Rollback"): dry run or execute a job's or a campaign tree's rollback; the audit trail."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from gateway import rollback
from gateway.admin_http import bad_request, json_object, listing, page_limit, row_cursor
from gateway.admin_http import error as _error
from gateway.admin_http import rejected as _rejected
from gateway.context import GATEWAY
from gateway.errors import BadRequest, JobNotFound, StoreError
from gateway.model import AuditRecord

ROLLBACK_KEYS = frozenset({"dry_run", "reason", "access_token", "actor", "plan_id"})
MAX_ACTOR = 128


def audit_json(record: AuditRecord) -> dict[str, Any]:
    doc = asdict(record)
    doc["detail"] = dict(record.detail)
    doc["created_at"] = record.created_at.isoformat()
    return doc


async def _rollback_body(request: web.Request) -> tuple[dict[str, Any], list[str]]:
    """The body of a rollback request, and every problem with it. No body: a dry run."""
    doc, problems = await json_object(
        request, '{"dry_run": false, "reason": "..."}', allowed=ROLLBACK_KEYS
    )
    if not isinstance(doc.setdefault("dry_run", True), bool):
        problems.append("dry_run: true or false")
    reason = doc.get("reason")
    if "reason" in doc and (not isinstance(reason, str) or len(reason) > rollback.MAX_REASON):
        problems.append(f"reason: a string of at most {rollback.MAX_REASON} characters")
    elif doc["dry_run"] is False and not (reason or "").strip():
        problems.append("reason: required to execute a rollback (it goes into every audit row)")
    if not isinstance(doc.get("access_token", ""), str):
        problems.append("access_token: a string")
    if not isinstance(doc.get("plan_id", ""), str):
        problems.append("plan_id: the plan_id a dry run answered")
    actor = doc.get("actor", rollback.DEFAULT_ACTOR)
    if not isinstance(actor, str) or not actor.strip() or len(actor) > MAX_ACTOR:
        problems.append(f"actor: a name of 1 to {MAX_ACTOR} characters, not only spaces")
    return doc, problems


async def _job_rollback(request: web.Request) -> web.StreamResponse:
    """POST /admin/v1/jobs/{id}/rollback {"dry_run": true} → the plan (nothing changes);
    {"dry_run": false, "reason": "...", "access_token"?} → executes it, answers the report."""
    return await _rollback(request, job_id=request.match_info["job_id"])


async def _campaign_rollback(request: web.Request) -> web.StreamResponse:
    """POST /admin/v1/campaigns/{id}/rollback: the same for a campaign tree in the ledger."""
    return await _rollback(request, campaign_id=request.match_info["campaign_id"])


async def _rollback(
    request: web.Request, *, job_id: str | None = None, campaign_id: str | None = None
) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    doc, problems = await _rollback_body(request)
    if problems:
        return bad_request(problems)
    try:
        if doc["dry_run"]:
            planned = await rollback.plan(gw, job_id=job_id, campaign_id=campaign_id)
            return web.json_response(rollback.plan_json(planned))
        report = await rollback.execute(
            gw,
            job_id=job_id,
            campaign_id=campaign_id,
            reason=doc["reason"],
            token=doc.get("access_token") or None,
            actor=doc.get("actor", rollback.DEFAULT_ACTOR).strip(),
            expected_plan=doc.get("plan_id") or None,
        )
    except JobNotFound as exc:
        return _rejected("job_not_found", exc.message)
    except rollback.CampaignNotRecorded as exc:
        return _error(404, str(exc))
    except rollback.PlanChanged as exc:
        return _error(409, str(exc), plan=rollback.plan_json(exc.planned))
    except BadRequest as exc:
        return _rejected("bad_request", exc.message)
    except StoreError as exc:  # the ledger, or the Redis lease that serialises executions
        return _error(503, f"store unavailable: {exc.message}")
    return web.json_response(rollback.report_json(report))


async def _audit(request: web.Request) -> web.StreamResponse:
    """GET /admin/v1/audit?job=&campaign=&graph_id=&action=&limit=&before= (newest first)."""
    q = request.query
    problems: list[str] = []
    limit = page_limit(q, problems)
    before = row_cursor(q, problems)
    if problems:
        return bad_request(problems)
    try:
        page = await request.app[GATEWAY].audit.audit(
            job_id=q.get("job"),
            campaign_id=q.get("campaign"),
            graph_id=q.get("graph_id"),
            action=q.get("action"),
            before_id=before,
            limit=limit,
        )
    except StoreError as exc:
        return _error(503, f"ledger unavailable: {exc.message}")
    after = None if page.next_before_id is None else str(page.next_before_id)
    return listing(request, [audit_json(r) for r in page.items], after)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/v1/jobs/{job_id}/rollback", _job_rollback)
    app.router.add_post("/admin/v1/campaigns/{campaign_id}/rollback", _campaign_rollback)
    app.router.add_get("/admin/v1/audit", _audit)
