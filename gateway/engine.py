"""The create path: write the intent, forward, record what Graph answered.

Phases, each its own step so a crash between them leaves a row that says what to look for:
1. `write_intents` commits one `sending` row per create (batch op, copy) — before Graph sees
   anything. If that fails the create is refused with 503 `ledger_unavailable` (invariant 3).
2. The request goes to Graph alone, outside any transaction.
3. `settle` records `created` (+ id), `failed` (+ Graph's error) or `unknown` (no answer, or an
   answer that does not prove nothing happened); `add_entities` records the ids a copy or an
   image upload names beyond the first. If recording fails the rows stay `sending`: the entity
   is still on record as "look on Graph" (invariant 7) and the caller gets Graph's answer.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway import logs
from gateway.context import Gateway
from gateway.core.classify import Batch, Create, CreateOp
from gateway.core.outcome import Created, Failed, OpOutcome, Unknown, judge, judge_batch, parse_json
from gateway.errors import (
    GatewayError,
    OutcomeUnknown,
    StoreError,
)
from gateway.model import CreateSource, Discovered, EntityState, Intent, Outcome
from gateway.upstream import map_errors, response_headers

Body = bytes | Callable[[], AsyncIterator[bytes]]
_DECODABLE = ("gzip", "deflate")


def _now(gw: Gateway) -> datetime:
    return datetime.fromtimestamp(gw.clock.now(), UTC)


def _accept_encoding(client_value: str | None) -> str:
    """What the gateway asks Graph for on a create: only codings it can read itself."""
    offered = {p.split(";")[0].strip().lower() for p in (client_value or "").split(",")}
    usable = [c for c in _DECODABLE if c in offered]
    return ", ".join(usable) if usable else "identity"


def _decode(raw: bytes, coding: str | None) -> bytes:
    coding = (coding or "identity").strip().lower()
    try:
        if coding == "gzip":
            return gzip.decompress(raw)
        if coding == "deflate":
            try:
                return zlib.decompress(raw)
            except zlib.error:
                return zlib.decompress(raw, -zlib.MAX_WBITS)
    except (OSError, EOFError, zlib.error):
        return b""
    return raw


async def _copy_account(gw: Gateway, op: CreateOp, token: str | None, version: str) -> str | None:
    """The ad account of a copy's source: from the ledger, else one read on Graph."""
    if op.parent_id is None:
        return None
    try:
        known = await gw.ledger.find_by_graph_id(op.parent_id)
    except StoreError:
        known = None
    if known is not None and known.account_id:
        return known.account_id
    if not token:
        return None
    url = f"{gw.settings.upstream}/{version}{op.parent_id}"
    try:
        with map_errors(create=False):
            async with gw.session.get(
                url, params={"fields": "account_id", "access_token": token}, timeout=gw.timeout
            ) as resp:
                doc = parse_json(_decode(await resp.read(), resp.headers.get("Content-Encoding")))
    except GatewayError:
        return None
    account = doc.get("account_id") if isinstance(doc, dict) else None
    return f"act_{account}" if account else None


async def run_create(
    gw: Gateway,
    request: web.Request,
    request_id: str,
    decision: Create | Batch,
    body: Body,
    *,
    url: URL,
    headers: CIMultiDict[str],
    version_prefix: str,
) -> web.Response:
    """Forward one create (or a batch holding creates) with its intents written first."""
    batch = isinstance(decision, Batch)
    ops = decision.creates if isinstance(decision, Batch) else (decision.op,)
    caller = gw.caller(decision.token)
    intents = []
    for op in ops:
        account = op.account_id
        if op.entity_type == "copy":
            account = await _copy_account(gw, op, decision.token, version_prefix)
        source = (
            CreateSource.COPY
            if op.entity_type == "copy"
            else CreateSource.BATCH
            if batch
            else CreateSource.SINGLE
        )
        intents.append(
            Intent(
                request_id=request_id,
                op_index=op.index,
                caller=caller,
                account_id=account,
                entity_type=op.entity_type,
                source=source,
                parent_id=op.reparent_id or op.parent_id,
                name=op.name,
            )
        )
    row_ids = await _timed(gw, "intents", gw.ledger.write_intents(intents, now=_now(gw)))
    rows = {op.index: row for op, row in zip(ops, row_ids, strict=True)}
    headers["Accept-Encoding"] = _accept_encoding(request.headers.get("Accept-Encoding"))
    kind = "batch" if batch else ("copy" if ops[0].entity_type == "copy" else "create")
    started = gw.clock.monotonic()
    try:
        with map_errors(create=True):
            data: Any = body() if callable(body) else body
            async with gw.session.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=gw.timeout,
            ) as upstream:
                raw = await upstream.read()
                status, up_headers = upstream.status, upstream.headers
    except OutcomeUnknown:
        gw.metrics.upstream_errors.labels("no_answer").inc()
        unknown: dict[int, OpOutcome] = {op.index: Unknown("no answer from Graph") for op in ops}
        await _settle(gw, request_id, intents, rows, unknown)
        raise
    except GatewayError as exc:
        # Not sent (connection refused) or not sent whole (an upload past its limit): Graph
        # cannot have created anything from it.
        gw.metrics.upstream_errors.labels("not_sent").inc()
        failed: dict[int, OpOutcome] = {op.index: Failed(_transport(exc)) for op in ops}
        await _settle(gw, request_id, intents, rows, failed)
        raise
    finally:
        gw.metrics.upstream_latency.labels(kind).observe(gw.clock.monotonic() - started)
    doc = parse_json(_decode(raw, up_headers.get("Content-Encoding")))
    outcomes: dict[int, OpOutcome] = (
        judge_batch(ops, status, doc) if batch else {ops[0].index: judge(ops[0], status, doc)}
    )
    await _settle(gw, request_id, intents, rows, outcomes)
    out_headers = response_headers(up_headers)
    out_headers["X-Gateway-Request-Id"] = request_id
    return web.Response(status=status, body=raw, headers=out_headers)


def _transport(exc: GatewayError) -> dict[str, Any]:
    return {"status": None, "code": None, "message": f"not sent: {exc.message}"}


async def _timed(gw: Gateway, op: str, call: Awaitable[Any]) -> Any:
    started = gw.clock.monotonic()
    try:
        return await call
    except StoreError:
        gw.metrics.ledger_failures.labels(op).inc()
        raise
    finally:
        gw.metrics.ledger_write_latency.labels(op).observe(gw.clock.monotonic() - started)


async def _settle(
    gw: Gateway,
    request_id: str,
    intents: list[Intent],
    rows: dict[int, int],
    outcomes: dict[int, OpOutcome],
) -> None:
    """Record every outcome; a ledger failure here is logged, never shown to the caller."""
    settled: list[Outcome] = []
    found: list[Discovered] = []
    by_index = {i.op_index: i for i in intents}
    for index, result in outcomes.items():
        intent = by_index[index]
        match result:
            case Created(graph_id=graph_id, entity_type=entity_type, children=children):
                state = EntityState.CREATED
                settled.append(Outcome(rows[index], state, graph_id, entity_type=entity_type))
                # Children of one op get indexes past every op of the request: 1000 per op.
                found.extend(
                    Discovered(
                        request_id=request_id,
                        op_index=(index + 1) * 1000 + n,
                        caller=intent.caller,
                        account_id=intent.account_id,
                        entity_type=child.entity_type,
                        graph_id=child.graph_id,
                        parent_id=child.parent_id,
                        source=intent.source,
                    )
                    for n, child in enumerate(children)
                )
                gw.metrics.entities.labels(entity_type or intent.entity_type, state).inc()
                for child in children:
                    gw.metrics.entities.labels(child.entity_type, state).inc()
            case Failed(error=error):
                settled.append(Outcome(rows[index], EntityState.FAILED, error=error))
                gw.metrics.entities.labels(intent.entity_type, EntityState.FAILED).inc()
            case Unknown():
                settled.append(Outcome(rows[index], EntityState.UNKNOWN))
                gw.metrics.entities.labels(intent.entity_type, EntityState.UNKNOWN).inc()
    try:
        await _timed(gw, "settle", gw.ledger.settle(settled, now=_now(gw)))
        if found:
            await _timed(gw, "discovered", gw.ledger.add_entities(found, now=_now(gw)))
    except StoreError as exc:
        logs.event(
            "ledger_settle_failed",
            request_id=request_id,
            rows=len(settled),
            discovered=len(found),
            error=exc.message,
            level=40,
        )
