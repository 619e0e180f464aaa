"""Admin API for jobs: listing, post-creation verification and repair (DESIGN.md §3.3).

    GET  /admin/v1/jobs?status=&account=&since=&limit=&before=   newest first, keyset paged
                                     ({"data": [...], "paging": {"next": url}})
    POST /admin/v1/jobs/{id}/verify   {"access_token"?}  → the report, kept in the audit trail
    POST /admin/v1/jobs/{id}/repair   {"access_token"?}  → verifies, then repairs; both audited

The Graph token comes from the body, else the job's caller's token if this process still
holds it in memory, else GATEWAY_ROLLBACK_TOKEN; it is never stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.admin_http import (
    bad_request,
    error,
    graph_unread,
    job_cursor,
    json_object,
    listing,
    page_limit,
    rejected,
    since,
)
from gateway.context import GATEWAY, Gateway
from gateway.errors import GatewayError, StoreError
from gateway.jobs import job_json
from gateway.model import JobQuery, JobRecord, JobStatus
from gateway.postcheck import verify_and_record
from gateway.repair import repair_and_record


def _cursor(value: tuple[datetime, str] | None) -> str | None:
    return f"{value[0].isoformat()}|{value[1]}" if value else None


async def _list(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    q = request.query
    problems: list[str] = []
    status = None
    if "status" in q:
        try:
            status = JobStatus(q["status"])
        except ValueError:
            problems.append(f"status: one of {', '.join(s.value for s in JobStatus)}")
    started = before = None
    try:
        started = since(q["since"]) if "since" in q else None
    except ValueError:
        problems.append("since: POSIX seconds or an ISO 8601 time")
    try:
        before = job_cursor(q["before"]) if "before" in q else None
    except ValueError:
        problems.append("before: a cursor as paging.next carries it")
    limit = page_limit(q, problems)
    if problems:
        return bad_request(problems)
    query = JobQuery(
        status=status, account_id=q.get("account"), since=started, before=before, limit=limit
    )
    try:
        page = await gw.jobs.list_jobs(query)
    except StoreError as exc:
        return error(503, f"ledger unavailable: {exc.message}")
    return listing(request, [job_json(j) for j in page.items], _cursor(page.next_before))


async def _body_token(request: web.Request) -> tuple[str | None, list[str]]:
    doc, problems = await json_object(
        request, '{} or {"access_token": "..."}', allowed=frozenset({"access_token"})
    )
    token = doc.get("access_token")
    if "access_token" in doc and not isinstance(token, str):
        problems.append("access_token: a string")
    return (token or None) if isinstance(token, str) else None, problems


async def _job_and_token(
    request: web.Request,
) -> tuple[Gateway, JobRecord, str] | web.Response:
    gw = request.app[GATEWAY]
    given, problems = await _body_token(request)
    if problems:
        return bad_request(problems)
    job_id = request.match_info["job_id"]
    try:
        job = await gw.jobs.job(job_id)
    except StoreError as exc:
        return error(503, f"ledger unavailable: {exc.message}")
    if job is None:
        return rejected("job_not_found", f"No job {job_id!r}")
    token = given or gw.token_for(job.caller)
    if not token:
        return rejected(
            "bad_request",
            "A Graph token is needed: give access_token in the body or set GATEWAY_ROLLBACK_TOKEN",
        )
    return gw, job, token


async def _verify(request: web.Request) -> web.StreamResponse:
    found = await _job_and_token(request)
    if isinstance(found, web.Response):
        return found
    gw, job, token = found
    try:
        report = await verify_and_record(gw, job, token, actor="admin")
    except StoreError as exc:
        return error(503, f"ledger unavailable: {exc.message}")
    except GatewayError as exc:
        return graph_unread(exc)
    return web.json_response({"job_id": job.job_id, "verification": report.to_dict()})


async def _repair(request: web.Request) -> web.StreamResponse:
    found = await _job_and_token(request)
    if isinstance(found, web.Response):
        return found
    gw, job, token = found
    try:
        report = await verify_and_record(gw, job, token, actor="admin")
        result = await repair_and_record(gw, job, report, actor="admin", token=token)
        after = await gw.jobs.job(job.job_id)
    except StoreError as exc:
        return error(503, f"ledger unavailable: {exc.message}")
    except GatewayError as exc:
        return graph_unread(exc)
    body: dict[str, Any] = {
        "job_id": job.job_id,
        "verification": report.to_dict(),
        "repair": result,
        "job_status": (after or job).status.value,
    }
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/v1/jobs", _list)
    app.router.add_post("/admin/v1/jobs/{job_id}/verify", _verify)
    app.router.add_post("/admin/v1/jobs/{job_id}/repair", _repair)
