"""The admin port: health, readiness, Prometheus metrics and the admin API (DESIGN.md §3.3).

Everything under /admin/v1/ needs `Authorization: Bearer $GATEWAY_ADMIN_TOKEN` when a token
is set (compared in constant time); without one the port only binds to loopback (settings).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import admin_jobs, admin_resilience, admin_rollback, metrics_merge, openapi
from gateway.admin_http import (
    MAX_PAGE,
    bad_request,
    input_problems,
    listing,
    page_limit,
    row_cursor,
)
from gateway.admin_http import error as _error
from gateway.admin_http import rejected as _rejected
from gateway.admin_http import since as _since
from gateway.admin_resilience import breakers_now
from gateway.admin_rollback import audit_json
from gateway.attempt import GRAPH_BREAKER
from gateway.context import GATEWAY, Gateway
from gateway.errors import StoreError
from gateway.jobs import job_json
from gateway.metrics import GATEWAY_WIDE, PoolMetrics
from gateway.model import EntityQuery, EntityRecord, EntityState
from gateway.workers import WORKER_POOL, WORKER_SCRAPE_SECONDS, WorkerPool

ADMIN_PREFIX = "/admin/v1/"
# gateway_breaker_state's values (its help text lists them).
BREAKER_STATE_NUMBER = {"closed": 0, "open": 1, "half-open": 2, "forced-open": 3, "disabled": 4}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The gauges saying whose metrics /metrics got (only when there are workers).
POOL_METRICS = web.AppKey("pool_metrics", PoolMetrics)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unknown path or method, or a body over the size limit, answers in the API's error
    envelope, not aiohttp's text."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _error(404, f"No admin endpoint {request.method} {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        response = _error(405, f"{request.method} is not allowed on {request.path}")
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except web.HTTPRequestEntityTooLarge as exc:
        # aiohttp's text names its limit: "Maximum request body size 1048576 exceeded."
        return _rejected("bad_request", exc.text or "The body is too large", status=413)


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


@web.middleware
async def _inputs(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No admin endpoint takes a query parameter twice or a NUL anywhere in its query or path:
    400 naming each, before any handler (or store) sees them."""
    if request.path.startswith(ADMIN_PREFIX):
        problems = input_problems(request)
        if problems:
            return bad_request(problems)
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
        breakers = {name: doc["state"] for name, doc in (await breakers_now(gw)).items()}
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
        breakers = await breakers_now(gw)
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


async def _own_lanes(request: web.Request) -> web.StreamResponse:
    """A worker's calls waiting and in flight, by lane (its parent's /admin/v1/accounts)."""
    return web.json_response(request.app[GATEWAY].gate.lanes())


def _read_queue_depths(gw: Gateway) -> None:
    for lane, depth in gw.gate.depths().items():
        gw.metrics.queue_depth.labels(lane).set(depth)


def _exposition(body: bytes) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


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
    before = row_cursor(q, problems)
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
        return bad_request(problems)
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
    after = None if page.next_before_id is None else str(page.next_before_id)
    return listing(request, [entity_json(r) for r in page.items], after)


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


def create_worker_metrics_app(gw: Gateway) -> web.Application:
    """What a worker of `serve --workers N` serves on its loopback listener, for its parent to
    gather: its own GET /metrics, and GET /lanes (its throttle queues, for /admin/v1/accounts);
    nothing else."""
    app = web.Application()
    app[GATEWAY] = gw
    app.router.add_get("/metrics", _own_metrics)
    app.router.add_get("/lanes", _own_lanes)
    return app


def create_admin_app(gw: Gateway, *, pool: WorkerPool | None = None) -> web.Application:
    """The admin port; with *pool* (the parent of `serve --workers N`) its /metrics is the
    whole gateway's."""
    app = web.Application(middlewares=[_json_errors, _auth, _inputs])
    app[GATEWAY] = gw
    if pool is not None:
        app[WORKER_POOL] = pool
        app[POOL_METRICS] = PoolMetrics()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/admin/v1/entities", _entities)
    app.router.add_get("/admin/v1/jobs/{job_id}", _job)
    admin_resilience.add_routes(app)
    admin_rollback.add_routes(app)
    app.router.add_get("/admin/v1/openapi.json", openapi.handle)
    admin_jobs.add_routes(app)
    return app
