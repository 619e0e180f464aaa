"""The admin API's resilience endpoints (DESIGN.md §3.3, §6): the circuit breakers (list;
force open, disable, reset) and the throttle gates with the retry budget."""

from __future__ import annotations

import logging
from typing import Any, get_args

from aiohttp import web

from gateway import logs
from gateway.admin_http import bad_request, json_object
from gateway.admin_http import error as _error
from gateway.attempt import GRAPH_BREAKER
from gateway.context import GATEWAY, Gateway
from gateway.core.breaker import Breaker, ForceMode, describe
from gateway.errors import StoreError
from gateway.ratequeue import add_lanes
from gateway.workers import WORKER_POOL, WORKER_SCRAPE_SECONDS

FORCE_ACTIONS: tuple[ForceMode, ...] = get_args(ForceMode)
# An operator's note on a forced breaker goes into one log line: a sentence, not a document.
MAX_REASON = 500
BODY_KEYS = frozenset({"action", "reason"})


async def breakers_now(gw: Gateway) -> dict[str, dict[str, Any]]:
    """Every breaker as `describe()` shows it, "graph" always (a fresh one before first use)."""
    breakers = await gw.breakers.snapshot()
    if GRAPH_BREAKER not in breakers:
        fresh = Breaker(gw.breakers.config_for(GRAPH_BREAKER))
        breakers[GRAPH_BREAKER] = describe(fresh, gw.clock.now())
    return dict(sorted(breakers.items()))


async def _breakers(request: web.Request) -> web.StreamResponse:
    """GET /admin/v1/breakers: every breaker's state, window counts and rates."""
    try:
        breakers = await breakers_now(request.app[GATEWAY])
    except StoreError as exc:
        return _error(503, f"coordinator unavailable: {exc.message}")
    return web.json_response({"breakers": breakers})


async def _force_breaker(request: web.Request) -> web.StreamResponse:
    """POST /admin/v1/breakers/{name} {"action": "open"|"disable"|"reset", "reason": "..."}."""
    gw = request.app[GATEWAY]
    name = request.match_info["name"]
    doc, problems = await json_object(
        request, '{"action": "open|disable|reset", "reason": "..."}', allowed=BODY_KEYS
    )
    action = doc.get("action")
    mode = next((m for m in FORCE_ACTIONS if m == action), None)
    if mode is None:
        problems.append(f"action: one of {list(FORCE_ACTIONS)}, got {action!r}")
    reason = doc.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        problems.append(f"reason: a string of at most {MAX_REASON} characters")
    if problems or mode is None:
        return bad_request(problems)
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
    depth and in-flight calls, and the retry budget. The gates and the budget are shared
    (Redis); the queues are each process's: with workers, theirs are added (`processes` says
    whose answered)."""
    gw = request.app[GATEWAY]
    try:
        gates = await gw.gate.snapshot()
        budget = await gw.budget.snapshot()
    except StoreError as exc:
        return _error(503, f"coordinator unavailable: {exc.message}")
    body: dict[str, Any] = {**gates, "retry_budget": budget}
    pool = request.app.get(WORKER_POOL)
    if pool is not None:
        processes = {"0": "ok"}
        for worker_id, lanes in (await pool.fetch_json("/lanes", WORKER_SCRAPE_SECONDS)).items():
            if isinstance(lanes, dict):
                add_lanes(body, lanes)
            processes[str(worker_id)] = "ok" if isinstance(lanes, dict) else "missing"
        body["processes"] = processes
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/v1/breakers", _breakers)
    app.router.add_post("/admin/v1/breakers/{name}", _force_breaker)
    app.router.add_get("/admin/v1/accounts", _accounts)
