"""The simulator's HTTP face: Graph's endpoints on `/`, the control API on `/__sim/`.

The shell around `Simulator`: parses requests (query, form, multipart, JSON; token in any of
them or in `Authorization`), renders answers with Graph's headers, and carries out the
connection faults (drop the connection, stall the answer). Access logs never show a query
string, so no token reaches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from gateway.clock import Clock, OffsetClock
from gateway.sim.config import (
    SimConfig,
    SimConfigError,
    parse_account,
    parse_token,
    update_limits,
)
from gateway.sim.errors import GraphError
from gateway.sim.faults import FaultRule
from gateway.sim.routes import split_version
from gateway.sim.simulator import OpRequest, OpResult, Simulator, new_trace_id

log = logging.getLogger("gateway.sim")

# Ad images and videos arrive as multipart uploads; Graph accepts images up to 30 MB.
MAX_BODY_BYTES = 32 * 1024 * 1024

SIM = web.AppKey("simulator", Simulator)
CLOCK = web.AppKey("sim_clock", OffsetClock)
STOPPING = web.AppKey("sim_stopping", asyncio.Event)
INITIAL = web.AppKey("sim_initial_config", SimConfig)

_BASE_HEADERS = {
    "Cache-Control": "private, no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "Sat, 01 Jan 2000 00:00:00 GMT",
    "Access-Control-Allow-Origin": "*",
    "x-fb-rev": "1029384756",
}


class AccessLogger(AbstractAccessLogger):
    """One JSON line per request: method, path (never the query), status, duration."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            json.dumps(
                {
                    "event": "sim_request",
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "duration_ms": round(time * 1000, 2),
                }
            )
        )


def create_sim_app(config: SimConfig, *, clock: Clock | None = None) -> web.Application:
    """The simulator as an aiohttp application (used by `graph-gateway sim` and tests)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    sim_clock = OffsetClock(clock)
    app[CLOCK] = sim_clock
    app[SIM] = Simulator(config, sim_clock)
    app[INITIAL] = config
    app[STOPPING] = asyncio.Event()

    async def on_shutdown(app: web.Application) -> None:
        app[STOPPING].set()

    app.on_shutdown.append(on_shutdown)
    r = app.router
    r.add_get("/__sim/state", _state)
    r.add_get("/__sim/objects", _objects)
    r.add_get("/__sim/counts", _counts)
    r.add_get("/__sim/requests", _requests)
    r.add_delete("/__sim/requests", _clear_requests)
    r.add_get("/__sim/faults", _faults)
    r.add_post("/__sim/faults", _add_faults)
    r.add_delete("/__sim/faults", _clear_faults)
    r.add_delete("/__sim/faults/{fault_id}", _remove_fault)
    r.add_post("/__sim/accounts", _put_account)
    r.add_post("/__sim/accounts/{account}/throttle", _throttle_account)
    r.add_post("/__sim/tokens", _put_token)
    r.add_post("/__sim/limits", _limits)
    r.add_post("/__sim/clock", _advance_clock)
    r.add_post("/__sim/reset", _reset)
    r.add_route("*", "/__sim/{tail:.*}", _control_not_found)
    r.add_route("*", "/{tail:.*}", _graph)
    return app


# --- Graph -----------------------------------------------------------------------------------


async def _graph(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM]
    sim.traffic.http_requests += 1
    trace_id = new_trace_id()
    try:
        params, files = await _read_params(request)
    except GraphError as exc:
        version, _ = split_version(request.path, sim.config.default_version)
        headers = exc.headers | {"facebook-api-version": version}
        return _graph_response(request, exc.status, exc.envelope(trace_id), trace_id, headers)
    token = _take_token(request, params)
    req = OpRequest(
        method=request.method,
        path=request.path,
        params=params,
        token=token,
        page_base=f"{request.scheme}://{request.host}",
        files=files,
    )
    result = await sim.run_op(req, trace_id=trace_id)
    return await _deliver(request, result, trace_id)


async def _read_params(
    request: web.Request,
) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    """Query parameters, overlaid with the body's (form, multipart or JSON)."""
    params: dict[str, Any] = dict(request.query)
    files: dict[str, tuple[str, bytes]] = {}
    if not request.body_exists:
        return params, files
    ctype = request.content_type
    try:
        if ctype == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.filename is not None:
                    files[part.name] = (part.filename, bytes(await part.read()))
                else:
                    params[part.name] = await part.text()
        elif ctype == "application/json":
            raw = await request.read()
            if raw.strip():
                doc = json.loads(raw)
                if not isinstance(doc, dict):
                    raise GraphError(
                        400, 100, "(#100) A JSON body must be an object", is_transient=False
                    )
                params.update(doc)
        else:
            # Graph reads form-encoded bodies whatever the declared type (curl -d sends none).
            text = await request.text()
            params.update(parse_qsl(text, keep_blank_values=True))
    except web.HTTPRequestEntityTooLarge as exc:
        raise GraphError(413, 100, "(#100) Request body is too large", is_transient=False) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise GraphError(
            400,
            100,
            f"(#100) Could not parse the request body: {type(exc).__name__}",
            is_transient=False,
        ) from exc
    return params, files


def _take_token(request: web.Request, params: dict[str, Any]) -> str | None:
    token = params.pop("access_token", None)
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if not token and scheme.lower() in ("bearer", "oauth") and value.strip():
        token = value.strip()
    return str(token) if token else None


async def _deliver(request: web.Request, result: OpResult, trace_id: str) -> web.StreamResponse:
    if result.stall:
        # The entity is committed; the answer comes only after the client has given up.
        # Shutting the simulator down ends the stall early.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(request.app[STOPPING].wait(), timeout=result.stall)
    if result.drop:
        # Committed, then the connection goes away without a byte of the answer.
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    if result.raw is not None:
        ctype, text = result.raw
        headers = {**_BASE_HEADERS, **result.headers, "x-fb-trace-id": trace_id}
        return web.Response(status=result.status, text=text, content_type=ctype, headers=headers)
    return _graph_response(request, result.status, result.body, trace_id, result.headers)


def _graph_response(
    request: web.Request, status: int, body: Any, trace_id: str, headers: dict[str, str]
) -> web.Response:
    payload = json.dumps(body, separators=(",", ":")).encode()
    out = {
        **_BASE_HEADERS,
        **headers,
        "x-fb-trace-id": trace_id,
        "x-fb-request-id": secrets.token_urlsafe(12),
        "Content-Type": "application/json; charset=UTF-8",
    }
    if request.method == "GET" and status == 200:
        etag = '"' + hashlib.sha1(payload).hexdigest() + '"'  # noqa: S324  # an ETag, not security
        out["ETag"] = etag
        if request.headers.get("If-None-Match") == etag:
            return web.Response(
                status=304, headers={k: v for k, v in out.items() if k != "Content-Type"}
            )
    return web.Response(status=status, body=payload, headers=out)


# --- control API -----------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _problem(problems: list[str], status: int = 400) -> web.Response:
    return _json({"error": {"message": "; ".join(problems), "problems": problems}}, status)


async def _body(request: web.Request) -> Any:
    if not request.body_exists:
        return {}
    try:
        return await request.json()
    except ValueError as exc:
        raise SimConfigError([f"request body is not JSON: {exc}"]) from exc


def _control(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except SimConfigError as exc:
            return _problem(exc.problems)

    return wrapped


async def _state(request: web.Request) -> web.StreamResponse:
    return _json(request.app[SIM].state())


async def _objects(request: web.Request) -> web.StreamResponse:
    """Ground truth: every object (deleted too unless live=true), filtered by query."""
    rows = request.app[SIM].world.snapshot()
    q = request.query
    for key in ("account_id", "type", "campaign_id", "adset_id", "status", "name"):
        if key in q:
            rows = [r for r in rows if str(r.get(key)) == q[key]]
    if "account" in q:
        rows = [r for r in rows if r["account_id"] == q["account"]]
    if "parent" in q:
        rows = [r for r in rows if q["parent"] in (r["campaign_id"], r["adset_id"])]
    if q.get("live", "").lower() in ("1", "true"):
        rows = [r for r in rows if r["status"] not in ("DELETED", "ARCHIVED")]
    return _json({"objects": rows, "count": len(rows)})


async def _counts(request: web.Request) -> web.StreamResponse:
    return _json(request.app[SIM].world.live_counts())


async def _requests(request: web.Request) -> web.StreamResponse:
    try:
        tail = int(request.query.get("log", "100"))
    except ValueError:
        return _problem(["log: expected an integer"])
    return _json(request.app[SIM].traffic.snapshot(log_tail=max(0, tail)))


async def _clear_requests(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM]
    sim.traffic = type(sim.traffic)()
    return _json({"cleared": True})


async def _faults(request: web.Request) -> web.StreamResponse:
    return _json({"faults": request.app[SIM].faults.snapshot()})


@_control
async def _add_faults(request: web.Request) -> web.StreamResponse:
    """One rule, a list of rules, or {"faults": [...]}; all are validated before any is added."""
    body = await _body(request)
    docs = body.get("faults", body) if isinstance(body, dict) else body
    docs = [docs] if isinstance(docs, dict) else docs
    if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
        raise SimConfigError(["expected a fault rule object or a list of them"])
    book = request.app[SIM].faults
    added: list[FaultRule] = []
    try:
        added.extend(book.add(doc) for doc in docs)
    except SimConfigError:
        for rule in added:
            book.remove(rule.id)
        raise
    return _json({"faults": [r.to_dict() for r in added]}, 201)


async def _clear_faults(request: web.Request) -> web.StreamResponse:
    request.app[SIM].faults.clear()
    return _json({"faults": []})


async def _remove_fault(request: web.Request) -> web.StreamResponse:
    if not request.app[SIM].faults.remove(request.match_info["fault_id"]):
        return _problem([f"no fault {request.match_info['fault_id']!r}"], 404)
    return _json({"removed": request.match_info["fault_id"]})


@_control
async def _put_account(request: web.Request) -> web.StreamResponse:
    """Add an ad account, or change one (fields not given keep their value)."""
    body = await _body(request)
    if not isinstance(body, dict) or "id" not in body:
        raise SimConfigError(["expected an object with at least 'id'"])
    sim = request.app[SIM]
    current = sim.world.accounts.get(str(body["id"]).removeprefix("act_"))
    base = {}
    if current is not None:
        base = {
            "id": current.id,
            "name": current.spec.name,
            "account_status": current.account_status,
            "disable_reason": current.disable_reason,
            "currency": current.spec.currency,
            "timezone_name": current.spec.timezone_name,
        }
    account = sim.world.put_account(parse_account(base | body), now=sim.clock.now())
    return _json(account.fields(), 201 if current is None else 200)


@_control
async def _throttle_account(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM]
    account = request.match_info["account"].removeprefix("act_")
    if account not in sim.world.accounts:
        return _problem([f"no ad account act_{account}"], 404)
    body = await _body(request)
    seconds = (
        body.get("seconds", sim.rates.limits.block_seconds) if isinstance(body, dict) else None
    )
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise SimConfigError(["seconds: expected a non-negative number"])
    sim.rates.block(account, float(seconds), now=sim.clock.now())
    return _json(sim.rates.snapshot(now=sim.clock.now())["accounts"]["act_" + account])


@_control
async def _put_token(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    if not isinstance(body, dict):
        raise SimConfigError(["expected a token object"])
    token = parse_token(body)
    request.app[SIM].world.tokens[token.token] = token
    return _json({"token": token.token, "kind": token.kind.value}, 201)


@_control
async def _limits(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    if not isinstance(body, dict) or not set(body) <= {"object_limits", "rate_limits"}:
        raise SimConfigError(["expected {'object_limits': {...}, 'rate_limits': {...}}"])
    sim = request.app[SIM]
    objects, rates = update_limits(sim.world.limits, sim.rates.limits, body)
    sim.world.limits = objects
    sim.rates.limits = rates
    state = sim.state()
    return _json({"object_limits": state["object_limits"], "rate_limits": state["rate_limits"]})


@_control
async def _advance_clock(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    seconds = body.get("advance_seconds") if isinstance(body, dict) else None
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise SimConfigError(["advance_seconds: expected a non-negative number"])
    clock = request.app[CLOCK]
    clock.advance(float(seconds))
    return _json({"now": clock.now(), "offset_seconds": clock.offset})


@_control
async def _reset(request: web.Request) -> web.StreamResponse:
    """Back to the configuration the simulator started with (optionally another seed)."""
    body = await _body(request)
    config = request.app[INITIAL]
    if isinstance(body, dict) and "seed" in body:
        if not isinstance(body["seed"], int) or isinstance(body["seed"], bool):
            raise SimConfigError(["seed: expected an integer"])
        config = SimConfig(**{**config.__dict__, "seed": body["seed"]})
    request.app[SIM].reset(config)
    return _json({"reset": True, "seed": config.seed})


async def _control_not_found(request: web.Request) -> web.StreamResponse:
    return _problem([f"no control endpoint {request.method} {request.path}"], 404)
