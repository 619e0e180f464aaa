"""The admin port: health, readiness, Prometheus metrics and the admin API (DESIGN.md §3.3).

Everything under /admin/v1/ needs `Authorization: Bearer $GATEWAY_ADMIN_TOKEN` when a token
is set (compared in constant time); without one the port only binds to loopback (settings).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, get_args

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import admin_jobs, logs, metrics_merge, openapi, rollback
from gateway.admin_http import MAX_PAGE, page_limit
from gateway.admin_http import error as _error
from gateway.admin_http import rejected as _rejected
from gateway.admin_http import since as _since
from gateway.attempt import GRAPH_BREAKER
from gateway.context import GATEWAY, Gateway
from gateway.core.breaker import Breaker, ForceMode, describe
from gateway.errors import BadRequest, JobNotFound, StoreError
from gateway.jobs import job_json
from gateway.metrics import GATEWAY_WIDE, PoolMetrics
from gateway.model import AuditRecord, EntityQuery, EntityRecord, EntityState
from gateway.workers import WorkerPool

ADMIN_PREFIX = "/admin/v1/"
FORCE_ACTIONS: tuple[ForceMode, ...] = get_args(ForceMode)
# An operator's note on a forced breaker goes into one log line: a sentence, not a document.
MAX_REASON = 500
# gateway_breaker_state's values (its help text lists them).
BREAKER_STATE_NUMBER = {"closed": 0, "open": 1, "half-open": 2, "forced-open": 3, "disabled": 4}

# With --workers N, /metrics waits this long for the workers' metrics (asked all at once): well
# inside Prometheus's default 10 s scrape timeout, and a worker's answer takes milliseconds, so
# one that has not answered by then is stopped or wedged and is reported missing instead.
WORKER_SCRAPE_SECONDS = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The worker processes of `serve --workers N`, whose metrics /metrics gathers, and the
# gauges saying whose it got (only when there are workers).
WORKER_POOL = web.AppKey("worker_pool", WorkerPool)
POOL_METRICS = web.AppKey("pool_metrics", PoolMetrics)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unknown path or method answers in the API's error envelope, not aiohttp's text."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _error(404, f"No admin endpoint {request.method} {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        response = _error(405, f"{request.method} is not allowed on {request.path}")
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[GATEWAY].settings.admin_token
    if token and request.path.startswith(ADMIN_PREFIX):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            response = _error(401, "Authorization: Bearer <admin token> is required")
            response.headers["WWW-Authenticate"] = 'Bearer realm="graph-gateway-admin"'
            return response
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return _error(403, "The admin token is not valid")
    return await handler(request)


async def _healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.StreamResponse:
    """Ready when the ledger (and Redis, when configured) answer. The breakers are reported
    but never make the gateway unready: with Graph failing, the process still answers (fast,
    Graph-shaped 503s), and pulling it from a load balancer would help nobody."""
    gw = request.app[GATEWAY]
    checks: dict[str, str] = {}
    try:
        await gw.ledger.check()
        checks["ledger"] = "ok"
    except StoreError as exc:
        checks["ledger"] = f"unavailable: {exc.message}"
    if gw.coordinator is not None:
        try:
            await gw.coordinator.check()
            checks["coordinator"] = "ok"
        except StoreError as exc:
            checks["coordinator"] = f"unavailable: {exc.message}"
    ready = all(v == "ok" for v in checks.values())
    try:
        breakers = {name: doc["state"] for name, doc in (await _breakers_now(gw)).items()}
    except StoreError:
        breakers = {GRAPH_BREAKER: "unknown"}
    body = {"ready": ready, "checks": checks, "breakers": breakers}
    return web.json_response(body, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text; the gauges of state held elsewhere (queues, breakers) are read now.

    With --workers N: the whole gateway's, each process's samples labelled `worker="<i>"`
    (0: this one), the breaker states once and unlabelled (they are shared through Redis), and
    `gateway_worker_scrape_up` saying whose samples are missing from this answer.
    """
    gw = request.app[GATEWAY]
    _read_queue_depths(gw)
    try:
        breakers = await _breakers_now(gw)
    except StoreError:
        breakers = {}  # keep the last known values; /readyz reports the store
    for name, doc in breakers.items():
        gw.metrics.breaker_state.labels(name).set(BREAKER_STATE_NUMBER.get(doc["state"], -1))
    pool = request.app.get(WORKER_POOL)
    if pool is None:
        return _exposition(gw.metrics.render())
    scraped = await pool.scrape_metrics(WORKER_SCRAPE_SECONDS)
    up = request.app[POOL_METRICS].scrape_up
    up.labels("0").set(1)
    for worker_id, families in scraped.items():
        up.labels(str(worker_id)).set(0 if families is None else 1)
    # The parent's own families go through the parser too, so that every process's are in one
    # shape (a registry's counters hold their _created samples; a parsed text's do not).
    parent = metrics_merge.parse(
        gw.metrics.render().decode() + request.app[POOL_METRICS].render().decode()
    )
    found = {i: families for i, families in scraped.items() if families is not None}
    merged = metrics_merge.merge(parent, found, shared=GATEWAY_WIDE)
    return _exposition(metrics_merge.render(merged))


async def _own_metrics(request: web.Request) -> web.StreamResponse:
    """A worker's metrics, for its parent's /metrics. The breaker states are left to the
    parent, which reads them from Redis, where every worker's are."""
    gw = request.app[GATEWAY]
    _read_queue_depths(gw)
    return _exposition(gw.metrics.render())


def _read_queue_depths(gw: Gateway) -> None:
    for lane, depth in gw.gate.depths().items():
        gw.metrics.queue_depth.labels(lane).set(depth)


def _exposition(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _breakers_now(gw: Gateway) -> dict[str, dict[str, Any]]:
    """Every breaker as `describe()` shows it, "graph" always (a fresh one before first use)."""
    breakers = await gw.breakers.snapshot()
    if GRAPH_BREAKER not in breakers:
        fresh = Breaker(gw.breakers.config_for(GRAPH_BREAKER))
        breakers[GRAPH_BREAKER] = describe(fresh, gw.clock.now())
    return dict(sorted(breakers.items()))


async def _breakers(request: web.Request) -> web.StreamResponse:
    """GET /admin/v1/breakers: every breaker's state, window counts and rates."""
    try:
        breakers = await _breakers_now(request.app[GATEWAY])
    except StoreError as exc:
        return _error(503, f"coordinator unavailable: {exc.message}")
    return web.json_response({"breakers": breakers})


async def _force_breaker(request: web.Request) -> web.StreamResponse:
    """POST /admin/v1/breakers/{name} {"action": "open"|"disable"|"reset", "reason": "..."}."""
    gw = request.app[GATEWAY]
    name = request.match_info["name"]
    try:
        doc = await request.json()
    except ValueError:
        doc = None
    problems = []
    if not isinstance(doc, dict):
        problems.append('body: a JSON object {"action": "open|disable|reset", "reason": "..."}')
        doc = {}
    action = doc.get("action")
    mode = next((m for m in FORCE_ACTIONS if m == action), None)
    if mode is None:
        problems.append(f"action: one of {list(FORCE_ACTIONS)}, got {action!r}")
    reason = doc.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        problems.append(f"reason: a string of at most {MAX_REASON} characters")
    if problems or mode is None:
        return _rejected("bad_request", "; ".join(problems), problems=problems)
    try:
        known = await gw.breakers.snapshot()
        if name != GRAPH_BREAKER and name not in known:
            names = sorted({GRAPH_BREAKER, *known})
            return _error(404, f"No breaker {name!r}; the gateway has {names}")
        if gw.coordinator is not None:
            # The registry would fall back to this process's breaker while Redis is down:
            # a forced state every other worker ignores must not look like success.
            await gw.coordinator.check()
        breaker = await gw.breakers.force(name, mode)
    except StoreError as exc:
        return _error(503, f"coordinator unavailable, nothing was forced: {exc.message}")
    logs.event(
        "breaker_forced",
        breaker=name,
        action=action,
        reason=reason,
        state=breaker.state.value,
        level=logging.WARNING,
    )
    body = {"name": name, "action": action, "reason": reason}
    return web.json_response({**body, "breaker": describe(breaker, gw.clock.now())})


async def _accounts(request: web.Request) -> web.StreamResponse:
    """GET /admin/v1/accounts: the throttle gates per ad account and the app's, with queue
    depth and in-flight calls (this process's), and the retry budget."""
    gw = request.app[GATEWAY]
    try:
        gates = await gw.gate.snapshot()
        budget = await gw.budget.snapshot()
    except StoreError as exc:
        return _error(503, f"coordinator unavailable: {exc.message}")
    return web.json_response({**gates, "retry_budget": budget})


def entity_json(record: EntityRecord) -> dict[str, Any]:
    doc = asdict(record)
    doc["created_at"] = record.created_at.isoformat()
    doc["updated_at"] = record.updated_at.isoformat()
    doc["state"] = record.state.value
    doc["source"] = record.source.value
    doc["error"] = dict(record.error) if record.error else None
    return doc


async def _entities(request: web.Request) -> web.StreamResponse:
    """GET /admin/v1/entities?account=&job=&since=&state=&limit=&before= (newest first)."""
    q = request.query
    problems: list[str] = []
    limit = page_limit(q, problems)
    before = None
    if "before" in q:
        try:
            before = int(q["before"])
        except ValueError:
            problems.append("before: the integer cursor from paging.next")
    since = None
    if "since" in q:
        try:
            since = _since(q["since"])
        except ValueError:
            problems.append("since: ISO 8601 (2026-11-29T10:00:00Z) or unix seconds")
    state = None
    if "state" in q:
        try:
            state = EntityState(q["state"])
        except ValueError:
            problems.append(f"state: one of {[s.value for s in EntityState]}")
    if problems:
        return _rejected("bad_request", "; ".join(problems), problems=problems)
    query = EntityQuery(
        account_id=q.get("account"),
        job_id=q.get("job"),
        since=since,
        state=state,
        before_id=before,
        limit=limit,
    )
    try:
        page = await request.app[GATEWAY].ledger.entities(query)
    except StoreError as exc:
        return _error(503, f"ledger unavailable: {exc.message}")
    body: dict[str, Any] = {"data": [entity_json(r) for r in page.items], "paging": {}}
    if page.next_before_id is not None:
        body["paging"]["next"] = str(request.rel_url.update_query(before=str(page.next_before_id)))
    return web.json_response(body)


async def _job(request: web.Request) -> web.StreamResponse:
    """GET /admin/v1/jobs/{id}: the job, its slots, its verification checks, its entities and
    its audit trail."""
    gw = request.app[GATEWAY]
    job_id = request.match_info["job_id"]
    try:
        job = await gw.jobs.job(job_id)
        if job is None:
            return _error(404, f"No job {job_id!r}")
        slots = await gw.jobs.slots(job_id)
        checks = await gw.jobs.checks(job_id)
        page = await gw.ledger.entities(EntityQuery(job_id=job_id, limit=MAX_PAGE))
        audit = await gw.audit.audit(job_id=job_id, limit=MAX_PAGE)
    except StoreError as exc:
        return _error(503, f"ledger unavailable: {exc.message}")
    body = job_json(job, slots)
    body["caller"] = job.caller
    body["slot_list"] = [
        {
            "entity_type": s.entity_type,
            "slot_no": s.slot_no,
            "state": s.state.value,
            "graph_id": s.graph_id,
            "request_id": s.request_id,
            "updated_at": s.updated_at.isoformat(),
        }
        for s in slots
    ]
    body["checks"] = [asdict(c) for c in checks]
    body["entities"] = [entity_json(r) for r in page.items]
    # Newest first; the whole trail is on /admin/v1/audit?job=<id>.
    body["audit"] = [audit_json(r) for r in audit.items]
    return web.json_response(body)


# --- rollback and audit (DESIGN.md §2 invariant 8, §6 "Rollback") ----------------------------

ROLLBACK_KEYS = frozenset({"dry_run", "reason", "access_token", "actor", "plan_id"})
MAX_ACTOR = 128


def audit_json(record: AuditRecord) -> dict[str, Any]:
    doc = asdict(record)
    doc["detail"] = dict(record.detail)
    doc["created_at"] = record.created_at.isoformat()
    return doc


async def _rollback_body(request: web.Request) -> tuple[dict[str, Any], list[str]]:
    """The body of a rollback request, and every problem with it. No body: a dry run."""
    raw = await request.read()
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return {}, ['body: a JSON object {"dry_run": false, "reason": "..."}']
    problems = [f"{key}: not a rollback parameter" for key in sorted(set(doc) - ROLLBACK_KEYS)]
    if not isinstance(doc.setdefault("dry_run", True), bool):
        problems.append("dry_run: true or false")
    reason = doc.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > rollback.MAX_REASON):
        problems.append(f"reason: a string of at most {rollback.MAX_REASON} characters")
    elif doc["dry_run"] is False and not (reason or "").strip():
        problems.append("reason: required to execute a rollback (it goes into every audit row)")
    if not isinstance(doc.get("access_token", ""), str):
        problems.append("access_token: a string")
    if not isinstance(doc.get("plan_id", ""), str):
        problems.append("plan_id: the plan_id a dry run answered")
    actor = doc.get("actor", rollback.DEFAULT_ACTOR)
    if not isinstance(actor, str) or not 1 <= len(actor.strip()) <= MAX_ACTOR:
        problems.append(f"actor: a name of 1 to {MAX_ACTOR} characters")
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
        return _rejected("bad_request", "; ".join(problems), problems=problems)
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
    before = None
    if "before" in q:
        try:
            before = int(q["before"])
        except ValueError:
            problems.append("before: the integer cursor from paging.next")
    if problems:
        return _rejected("bad_request", "; ".join(problems), problems=problems)
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
    body: dict[str, Any] = {"data": [audit_json(r) for r in page.items], "paging": {}}
    if page.next_before_id is not None:
        body["paging"]["next"] = str(request.rel_url.update_query(before=str(page.next_before_id)))
    return web.json_response(body)


def create_worker_metrics_app(gw: Gateway) -> web.Application:
    """What a worker of `serve --workers N` serves on its loopback metrics listener: its own
    GET /metrics, which the parent's gathers, and nothing else."""
    app = web.Application()
    app[GATEWAY] = gw
    app.router.add_get("/metrics", _own_metrics)
    return app


def create_admin_app(gw: Gateway, *, pool: WorkerPool | None = None) -> web.Application:
    """The admin port; with *pool* (the parent of `serve --workers N`) its /metrics is the
    whole gateway's."""
    app = web.Application(middlewares=[_json_errors, _auth])
    app[GATEWAY] = gw
    if pool is not None:
        app[WORKER_POOL] = pool
        app[POOL_METRICS] = PoolMetrics()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/admin/v1/entities", _entities)
    app.router.add_get("/admin/v1/jobs/{job_id}", _job)
    app.router.add_get("/admin/v1/breakers", _breakers)
    app.router.add_post("/admin/v1/breakers/{name}", _force_breaker)
    app.router.add_get("/admin/v1/accounts", _accounts)
    app.router.add_post("/admin/v1/jobs/{job_id}/rollback", _job_rollback)
    app.router.add_post("/admin/v1/campaigns/{campaign_id}/rollback", _campaign_rollback)
    app.router.add_get("/admin/v1/audit", _audit)
    app.router.add_get("/admin/v1/openapi.json", openapi.handle)
    admin_jobs.add_routes(app)
    return app
