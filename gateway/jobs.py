"""The job API on the proxy port: declare a job (verified first), read its progress.

`POST /_gateway/v1/jobs` and `GET /_gateway/v1/jobs/{id}` (DESIGN.md §3.1), authenticated by
the caller's own Graph token: a job is visible only to the token (HMAC) that declared it.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway import logs
from gateway.context import GATEWAY, Gateway
from gateway.core import verify
from gateway.core.classify import find_token
from gateway.errors import (
    BadRequest,
    GatewayError,
    IdempotencyMismatch,
    JobNotFound,
    UpstreamUnavailable,
    VerificationFailed,
)
from gateway.model import (
    AuditAction,
    AuditOutcome,
    JobRecord,
    JobSpec,
    JobStatus,
    SlotRecord,
    SlotState,
)

JOBS_PATH = "/_gateway/v1/jobs"
ENTITY_TYPES = frozenset({"campaign", "adset", "ad", "adcreative", "adimage", "advideo"})
MAX_EXPECTED = 10_000  # per type: far above Graph's own limits per account
_ACCOUNT = re.compile(r"^act_\d{1,20}$")


def _now(gw: Gateway) -> datetime:
    return datetime.fromtimestamp(gw.clock.now(), UTC)


def _caller_token(request: web.Request, body: dict[str, Any] | None) -> str:
    token = find_token(request.query, request.headers.get("Authorization"), body)
    if not token:
        raise BadRequest("An access token is required (access_token or Authorization: Bearer)")
    return token


def _notify_url(raw: Any, allowed: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(the URL, None) or (None, the problem). Only http(s) to an allow-listed host: the
    gateway must not be made to POST into networks its operators did not name."""
    if raw is None:
        return None, None
    if not isinstance(raw, str) or len(raw) > 2048:
        return None, "notify_url: an http(s) URL of at most 2048 characters"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, "notify_url: an http(s) URL"
    if parts.username or parts.password:
        return None, "notify_url: no credentials in the URL"
    if parts.hostname.lower() not in {h.lower() for h in allowed}:
        return None, (
            f"notify_url: host {parts.hostname!r} is not in the gateway's [notify] allowed_hosts"
        )
    return raw, None


def _parse_spec(doc: Any, caller: str, allowed_hosts: tuple[str, ...] = ()) -> JobSpec:
    problems = []
    if not isinstance(doc, dict):
        raise BadRequest("The job must be a JSON object")
    unknown = set(doc) - {
        "ad_account_id",
        "campaign_name",
        "expect",
        "external_ref",
        "access_token",
        "notify_url",
    }
    if unknown:
        problems.append(f"unknown fields: {', '.join(sorted(unknown))}")
    account = doc.get("ad_account_id")
    if not isinstance(account, str) or not _ACCOUNT.match(account):
        problems.append("ad_account_id: 'act_<digits>' is required")
    name = doc.get("campaign_name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 400:
        problems.append("campaign_name: 1-400 characters is required")
    expect = doc.get("expect")
    if not isinstance(expect, dict) or not expect:
        problems.append('expect: an object such as {"campaign": 1, "adset": 50, "ad": 50}')
        expect = {}
    for kind, count in expect.items():
        if kind not in ENTITY_TYPES:
            problems.append(f"expect.{kind}: one of {sorted(ENTITY_TYPES)}")
        elif not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= MAX_EXPECTED:
            problems.append(f"expect.{kind}: an integer from 1 to {MAX_EXPECTED}")
    if expect.get("campaign", 1) != 1:
        problems.append("expect.campaign: a job builds one campaign tree (1)")
    ref = doc.get("external_ref")
    if ref is not None and (not isinstance(ref, str) or not 1 <= len(ref) <= 255):
        problems.append("external_ref: 1-255 characters")
    notify, problem = _notify_url(doc.get("notify_url"), allowed_hosts)
    if problem:
        problems.append(problem)
    if problems:
        raise BadRequest("Invalid job: " + "; ".join(problems))
    return JobSpec(caller, str(account), str(name), dict(expect), ref, notify)


def job_json(job: JobRecord, slots: list[SlotRecord] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status.value,
        "ad_account_id": job.account_id,
        "campaign_name": job.campaign_name,
        "expect": dict(job.expect),
        "external_ref": job.external_ref,
        "verification": dict(job.verification),
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
    }
    if slots is not None:
        progress: dict[str, dict[str, int]] = {}
        for kind, count in job.expect.items():
            states = Counter(s.state for s in slots if s.entity_type == kind)
            progress[kind] = {
                "expected": count,
                "created": states[SlotState.CREATED],
                "in_flight": states[SlotState.RESERVED] + states[SlotState.UNKNOWN],
                "unknown": states[SlotState.UNKNOWN],
                "free": states[SlotState.FREE],
            }
        doc["slots"] = progress
        campaign = next(
            (s.graph_id for s in slots if s.entity_type == "campaign" and s.graph_id), None
        )
        doc["campaign_id"] = campaign
        created = sum(1 for s in slots if s.state is SlotState.CREATED)
        if job.status is JobStatus.FAILED:
            # What was made is kept and listed; undoing it is an explicit admin decision.
            doc["rollback"] = {
                "available": created > 0,
                "entities": created,
                "dry_run": f"POST /admin/v1/jobs/{job.job_id}/rollback",
            }
    return doc


def _same_declaration(job: JobRecord, spec: JobSpec) -> None:
    """A declaration repeated with its external_ref must be the same job (Stripe's rule for a
    reused idempotency key): IdempotencyMismatch (422) naming what differs, else nothing."""
    differs = [
        name
        for name, was, now in (
            ("ad_account_id", job.account_id, spec.account_id),
            ("campaign_name", job.campaign_name, spec.campaign_name),
            ("expect", dict(job.expect), dict(spec.expect)),
        )
        if was != now
    ]
    if differs:
        raise IdempotencyMismatch(
            f"external_ref {spec.external_ref!r} already declared job {job.job_id} with another "
            f"{', '.join(differs)}; use a new external_ref for a new job",
            error_data={"job_id": job.job_id, "differs": differs},
        )


async def declare_job(request: web.Request) -> web.StreamResponse:
    """POST /_gateway/v1/jobs: verify, then create the job and its slots (201), or 422."""
    gw = request.app[GATEWAY]
    try:
        doc = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The job must be a JSON object") from exc
    token = _caller_token(request, doc if isinstance(doc, dict) else None)
    caller = gw.caller(token)
    gw.remember_token(caller, token)
    spec = _parse_spec(doc, caller, gw.policy.notify.allowed_hosts)
    if spec.external_ref is not None:
        # A repeated declaration answers the job it made, whatever exists on Graph by now.
        known = await gw.jobs.job_by_ref(caller, spec.external_ref)
        if known is not None:
            _same_declaration(known, spec)
            return web.json_response(job_json(known, await gw.jobs.slots(known.job_id)))
    now = _now(gw)
    job_id = "job_" + secrets.token_hex(10)
    started = gw.clock.monotonic()
    checks = await gw.verifier.run(
        gw,
        caller=caller,
        token=token,
        account_id=spec.account_id,
        campaign_name=spec.campaign_name,
        expect=spec.expect,
    )
    verdicts = {c.name: verify.Verdict(c.status, c.detail, c.data) for c in checks}
    result = verify.overall(verdicts)
    report = {
        "status": result,
        "duration_ms": round((gw.clock.monotonic() - started) * 1000, 3),
        "checks": [
            {"name": c.name, "status": c.status, "detail": c.detail, "duration_ms": c.duration_ms}
            for c in checks
        ],
    }
    for check in checks:
        gw.metrics.verifications.labels(check.name, check.status).inc()
    if result != verify.PASSED:
        await gw.jobs.record_checks(
            checks, caller=caller, account_id=spec.account_id, job_id=None, now=now
        )
        logs.event("job_refused", account=spec.account_id, verification=result)
        failed = [c.name for c in checks if c.status in (verify.FAILED, verify.ERROR)]
        message = f"Pre-creation verification failed: {', '.join(failed)}; nothing was created"
        if result == verify.ERROR:
            # A check that could not run (Graph unreachable, timeouts) is worth retrying.
            raise UpstreamUnavailable(message, error_data=report)
        raise VerificationFailed(message, error_data=report)
    job, created = await gw.jobs.create_job(spec, job_id=job_id, verification=report, now=now)
    if not created:  # a concurrent declaration with the same external_ref made it first
        _same_declaration(job, spec)
    if created:
        await gw.jobs.record_checks(
            checks, caller=caller, account_id=spec.account_id, job_id=job.job_id, now=now
        )
        logs.event("job_declared", job_id=job.job_id, account=spec.account_id, expect=spec.expect)
    return web.json_response(
        job_json(job, await gw.jobs.slots(job.job_id)), status=201 if created else 200
    )


async def load_job(gw: Gateway, job_id: str, caller: str) -> JobRecord:
    """The job if it exists and belongs to *caller*; otherwise job_not_found (never 'forbidden':
    another caller's job ids are not revealed)."""
    job = await gw.jobs.job(job_id)
    if job is None or job.caller != caller:
        raise JobNotFound(f"No job {job_id!r} for this access token")
    return job


async def show_job(request: web.Request) -> web.StreamResponse:
    """GET /_gateway/v1/jobs/{id}: progress by slot state, for the caller that declared it."""
    gw = request.app[GATEWAY]
    caller = gw.caller(_caller_token(request, None))
    job = await load_job(gw, request.match_info["job_id"], caller)
    doc = job_json(job, await gw.jobs.slots(job.job_id))
    latest = await gw.audit.audit(job_id=job.job_id, action=AuditAction.VERIFICATION, limit=1)
    doc["post_verification"] = (
        {
            "at": latest.items[0].created_at.isoformat(),
            "clean": latest.items[0].outcome == AuditOutcome.OK,
            **{k: latest.items[0].detail.get(k) for k in ("counts", "missing", "untracked")},
        }
        if latest.items
        else None
    )
    return web.json_response(doc)


def add_routes(app: web.Application) -> None:
    app.router.add_post(JOBS_PATH, _guarded(declare_job))
    app.router.add_get(JOBS_PATH + "/{job_id}", _guarded(show_job))


def _guarded(handler: Any) -> Any:
    """The same Graph-shaped error answers as the proxy handler."""
    from gateway.proxy import error_response, new_request_id

    async def wrapped(request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        try:
            response: web.StreamResponse = await handler(request)
        except GatewayError as exc:
            response = error_response(exc, request_id)
        response.headers["X-Gateway-Request-Id"] = request_id
        return response

    return wrapped
