"""The proxy port: every call passes through to Graph; creates go through the engine.

The only place a `GatewayError` becomes an HTTP answer (Graph's envelope, `ERROR_TABLE`).
Pass-through requests are forwarded byte for byte: method, raw path and query, body, headers
minus hop-by-hop; Graph's answer comes back unchanged plus `X-Gateway-Request-Id`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from gateway import logs
from gateway.attempt import BUFFER_LIMIT, Reply, Tally, may_retry, throttle_absorbable, try_once
from gateway.context import GATEWAY, Gateway
from gateway.core.classify import (
    Batch,
    Classification,
    Create,
    Invalid,
    Passthrough,
    RawRequest,
    classify,
    needs_body,
    request_params,
)
from gateway.core.idempotency import fingerprint, parse_key
from gateway.core.retry import ErrorClass
from gateway.engine import run_create
from gateway.errors import (
    BadRequest,
    CircuitOpenError,
    GatewayError,
    PayloadTooLarge,
    UpstreamError,
)
from gateway.idempotent import run_once
from gateway.jobs import JOBS_PATH, MAX_EXPECTED
from gateway.model import EntityState
from gateway.settle import Body, CreateCall
from gateway.upstream import forward_headers, map_errors, response_headers

REQUEST_ID_HEADER = "X-Gateway-Request-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
JOB_HEADER = "X-Gateway-Job"
SLOT_HEADER = "X-Gateway-Slot"
_JOB_ID = re.compile(r"^job_[0-9a-f]{20}$")
RESERVED_PREFIX = "/_gateway/"
_VERSION = re.compile(r"^/(v\d+\.\d+)(?:/|$)")
_ACCOUNT = re.compile(r"^/(?:v\d+\.\d+/)?(act_\d+)(?:/|$)")
_SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})
_STREAM_CHUNK = 64 * 1024


def new_request_id() -> str:
    return secrets.token_hex(12)


def error_response(exc: GatewayError, request_id: str) -> web.Response:
    headers = {**exc.headers, REQUEST_ID_HEADER: request_id}
    if exc.spec.transient:
        headers["Retry-After"] = str(max(1, round(exc.retry_after or 1)))
    return web.json_response(exc.envelope(request_id), status=exc.status, headers=headers)


def _content_type(request: web.Request) -> str:
    raw = request.headers.get(hdrs.CONTENT_TYPE, "")
    return raw.split(";", 1)[0].strip().lower()


def _check_target(request: web.Request) -> None:
    """Not an open proxy: only origin-form targets; the upstream never comes from the client."""
    if request.method == hdrs.METH_CONNECT:
        raise BadRequest("CONNECT is not supported: this is not an open proxy", status=405)
    raw = request.raw_path
    if not raw.startswith("/"):
        raise BadRequest("Only origin-form request targets (/path?query) are accepted")


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(limit) from exc


def _stream_body(request: web.Request, limit: int) -> Callable[[], AsyncIterator[bytes]]:
    """The request body as it arrives, refusing more than *limit* bytes (never buffered whole)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(limit)

    async def chunks() -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in request.content.iter_chunked(_STREAM_CHUNK):
            seen += len(chunk)
            if seen > limit:
                raise PayloadTooLarge(limit)
            yield chunk

    return chunks


@web.middleware
async def open_proxy_guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse CONNECT and absolute-form targets before routing (which would 404 them)."""
    try:
        _check_target(request)
    except GatewayError as exc:
        return error_response(exc, new_request_id())
    return await handler(request)


async def handle(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    request_id = new_request_id()
    started = gw.clock.monotonic()
    label = _Kind()
    outcome, status = "ok", 500
    gw.metrics.in_flight.inc()
    try:
        response = await _dispatch(gw, request, request_id, label)
        status = response.status
        return response
    except GatewayError as exc:
        outcome, status = exc.reason, exc.status
        return error_response(exc, request_id)
    except Exception:  # noqa: BLE001  # a bug: Graph-shaped 500 for the caller, traceback for us
        outcome, status = "internal_error", 500
        logs.event("internal_error", request_id=request_id, level=40, exc_info=True)
        return error_response(GatewayError("Internal gateway error"), request_id)
    finally:
        gw.metrics.in_flight.dec()
        gw.metrics.requests.labels(label.kind, outcome).inc()
        logs.event(
            "request",
            request_id=request_id,
            method=request.method,
            path=request.path,
            kind=label.kind,
            status=status,
            outcome=outcome,
            duration_ms=round((gw.clock.monotonic() - started) * 1000, 3),
        )


@dataclass
class _Kind:
    """What a request turned out to be, for its metric and log line: set as soon as it is
    known, so that a create that ends in an error is still counted as a create."""

    kind: str = "passthrough"


def _create_kind(decision: Create | Batch) -> str:
    if isinstance(decision, Batch):
        return "batch"
    return "copy" if decision.op.entity_type == "copy" else "create"


async def _dispatch(
    gw: Gateway, request: web.Request, request_id: str, label: _Kind
) -> web.StreamResponse:
    ctype = _content_type(request)
    proxy = gw.policy.proxy
    body: Body | None = None
    decision: Classification = Passthrough()
    if request.path.startswith(RESERVED_PREFIX):
        raise BadRequest(f"No gateway endpoint {request.method} {request.path}", status=404)
    if needs_body(request.method, request.path, request.query, ctype, gw.rules):
        body = await _read_body(request, proxy.max_body_bytes)
        decision = classify(_raw(request, ctype, body), gw.rules)
    elif request.method != hdrs.METH_GET or "method" in request.query:
        decision = classify(_raw(request, ctype, None), gw.rules)
    # The raw path and query go out exactly as received (encoded=True: yarl re-quotes nothing).
    url = URL(gw.settings.upstream + request.raw_path, encoded=True)
    headers = forward_headers(request.headers, remote=request.remote, scheme=request.scheme)
    match decision:
        case Invalid(message=message):
            raise BadRequest(message)
        case Create() | Batch(creates=(_, *_)):
            if body is None:  # an upload classified by its path: stream it
                body = _stream_body(request, proxy.max_upload_bytes)
            match_version = _VERSION.match(request.path)
            call = CreateCall(
                request=request,
                request_id=request_id,
                decision=decision,
                body=body,
                url=url,
                headers=headers,
                version_prefix=f"{match_version.group(1)}/" if match_version else "",
                content_type=ctype,
                **_job_headers(request, batch=isinstance(decision, Batch)),
            )
            label.kind = _create_kind(decision)
            key = request.headers.get(IDEMPOTENCY_HEADER)
            if key is None:
                return (await run_create(gw, call)).response
            return await _run_with_key(gw, call, key, body)
    if body is None and request.body_exists:
        length = request.content_length
        if length is not None and length <= BUFFER_LIMIT:
            body = await _read_body(request, proxy.max_body_bytes)  # small: can go again
        else:
            body = _stream_body(request, proxy.max_upload_bytes)
    return await _pass_through(gw, request, request_id, url, headers, body)


def _job_headers(request: web.Request, *, batch: bool) -> dict[str, Any]:
    """X-Gateway-Job and X-Gateway-Slot, validated."""
    job = request.headers.get(JOB_HEADER)
    slot = request.headers.get(SLOT_HEADER)
    if job is not None and not _JOB_ID.match(job.strip()):
        raise BadRequest(f"{JOB_HEADER} must be a job id as POST {JOBS_PATH} returned it")
    slot_no = None
    if slot is not None:
        if job is None:
            raise BadRequest(f"{SLOT_HEADER} needs {JOB_HEADER}")
        if batch:
            raise BadRequest(f"{SLOT_HEADER} names one slot; each create in a batch takes its own")
        if not slot.strip().isdigit() or not 1 <= int(slot) <= MAX_EXPECTED:
            raise BadRequest(f"{SLOT_HEADER} must be a slot number from 1 to {MAX_EXPECTED}")
        slot_no = int(slot)
    return {"job_id": job.strip() if job else None, "slot_no": slot_no}


async def _run_with_key(gw: Gateway, call: CreateCall, raw_key: str, body: Body) -> web.Response:
    key = parse_key(raw_key)
    if key is None:
        raise BadRequest(f"{IDEMPOTENCY_HEADER} must be 1-255 printable characters")
    params = request_params(
        _raw(call.request, call.content_type, body if isinstance(body, bytes) else None)
    )
    ops = call.decision.creates if isinstance(call.decision, Batch) else (call.decision.op,)
    account = next((op.account_id for op in ops if op.account_id), "-")
    scope = f"{gw.caller(call.decision.token)}:{account}"
    # The job and slot headers are part of what is asked.
    params = {**params, "__job": call.job_id, "__slot": call.slot_no}
    fp = fingerprint(call.request.method, call.request.path, params)

    async def run() -> tuple[web.Response, bool]:
        result = await run_create(gw, call)
        return result.response, result.unknown

    return await run_once(
        gw, scope=scope, key=key, fingerprint=fp, request_id=call.request_id, run=run
    )


def _raw(request: web.Request, ctype: str, body: bytes | None) -> RawRequest:
    return RawRequest(
        method=request.method,
        path=request.path,
        query=request.query,
        content_type=ctype,
        authorization=request.headers.get(hdrs.AUTHORIZATION),
        body=body,
    )


def path_account(path: str) -> str | None:
    """The ad account a call's path names (`/v25.0/act_123/...`), for its throttle gate."""
    found = _ACCOUNT.match(path)
    return found.group(1) if found else None


async def _read_after_write(gw: Gateway, request: web.Request, reply: Reply) -> bool:
    """A read of an entity the gateway created moments ago that Graph says does not exist
    (100/33): Graph's replicas lag behind its writes, so it is worth asking again."""
    error = reply.error or {}
    if (error.get("code"), error.get("error_subcode")) != (100, 33):
        return False
    segments = [p for p in request.path.split("/") if p]
    if segments and _VERSION.match("/" + segments[0]):
        segments = segments[1:]
    if not segments:
        return False
    try:
        record = await gw.ledger.find_by_graph_id(segments[0])
    except GatewayError:
        return False
    if record is None or record.state is not EntityState.CREATED:
        return False
    age = gw.clock.now() - record.updated_at.timestamp()
    return age <= gw.policy.retry.read_after_write_seconds


async def _pass_through(
    gw: Gateway,
    request: web.Request,
    request_id: str,
    url: URL,
    headers: CIMultiDict[str],
    body: Body | None,
) -> web.StreamResponse:
    """Forward as is. Safe reads are retried on transient failures (within the attempts, the
    deadline and the retry budget); any call Graph throttled is held at the gate and sent
    again, when its body can be sent again. Other failures come back as Graph gave them."""
    tally = Tally.start(gw)
    try:
        return await _forward(gw, request, request_id, url, headers, body, tally)
    except GatewayError as exc:
        if tally.attempts:
            exc.headers.update(tally.headers())
        raise


async def _forward(
    gw: Gateway,
    request: web.Request,
    request_id: str,
    url: URL,
    headers: CIMultiDict[str],
    body: Body | None,
    tally: Tally,
) -> web.StreamResponse:
    await gw.budget.request()
    safe = request.method in _SAFE_METHODS
    resendable = not callable(body)
    account = path_account(request.path)
    while True:
        data: Any = body() if callable(body) else body
        try:
            reply = await try_once(
                gw,
                tally,
                method=request.method,
                url=url,
                headers=headers,
                data=data,
                account=account,
                create=False,
                kind="passthrough",
                stream=True,
                read_doc=False,
            )
        except UpstreamError as exc:
            # Only GET, HEAD and OPTIONS change nothing; any other call that loses its answer
            # is reported as "may have happened" (upstream_unavailable), never re-sent.
            transport = exc.transport
            if transport is None or isinstance(exc, CircuitOpenError):
                raise
            retriable = (safe or transport == "connect") and resendable
            if retriable and await may_retry(gw, tally, transport):
                continue
            raise
        if reply.body is not None:
            if resendable and throttle_absorbable(reply, tally):
                continue
            reason = None
            if safe and reply.error_class is ErrorClass.TRANSIENT:
                reason = "transient"
            elif safe and await _read_after_write(gw, request, reply):
                reason = "read_after_write"
            if reason is not None and await may_retry(gw, tally, reason):
                continue
        return await _answer(request, request_id, reply, tally)


async def _answer(
    request: web.Request, request_id: str, reply: Reply, tally: Tally
) -> web.StreamResponse:
    out_headers = response_headers(reply.headers)
    out_headers[REQUEST_ID_HEADER] = request_id
    out_headers.update(tally.headers())
    if reply.body is not None:
        return web.Response(status=reply.status, body=reply.body, headers=out_headers)
    upstream = reply.response
    assert upstream is not None  # noqa: S101  # try_once leaves a large success open
    try:
        response = web.StreamResponse(status=upstream.status, headers=out_headers)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        with map_errors(create=False):
            async for chunk in upstream.content.iter_chunked(_STREAM_CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        upstream.release()
