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

import contextlib
import gzip
import json
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway import logs, slots
from gateway.context import Gateway
from gateway.core.batchplan import encode, merge, parse_batch_body
from gateway.core.classify import Batch, Create, CreateOp, RawRequest, request_params
from gateway.core.outcome import Created, Failed, OpOutcome, Unknown, judge, judge_batch, parse_json
from gateway.errors import BadRequest, GatewayError, JobClosed, OutcomeUnknown, StoreError
from gateway.jobs import load_job
from gateway.model import (
    CLOSED_JOB_STATES,
    CreateSource,
    Discovered,
    EntityState,
    Intent,
    Outcome,
    SlotOutcome,
    SlotState,
)
from gateway.slots import JobPlan
from gateway.upstream import map_errors, response_headers

Body = bytes | Callable[[], AsyncIterator[bytes]]
_DECODABLE = ("gzip", "deflate")
_FORM, _JSON = "application/x-www-form-urlencoded", "application/json"


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


@dataclass
class CreateCall:
    """A create (or a batch holding creates) on its way to Graph."""

    request: web.Request
    request_id: str
    decision: Create | Batch
    body: Body
    url: URL
    headers: CIMultiDict[str]
    version_prefix: str
    content_type: str
    job_id: str | None = None
    slot_no: int | None = None


@dataclass(frozen=True)
class CreateResult:
    response: web.Response
    # Some create's outcome is unknown: the answer must not be replayed for an idempotency key.
    unknown: bool = False


def _replay(call: CreateCall, slot_no: int, graph_id: str) -> CreateResult:
    body = json.dumps({"id": graph_id}, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json; charset=UTF-8",
        "Idempotent-Replayed": "true",
        "X-Gateway-Slot": str(slot_no),
        "X-Gateway-Request-Id": call.request_id,
    }
    return CreateResult(web.Response(status=200, body=body, headers=headers))


async def run_create(gw: Gateway, call: CreateCall) -> CreateResult:
    """Forward one create (or a batch holding creates) with its intents written first."""
    decision, request_id = call.decision, call.request_id
    batch = isinstance(decision, Batch)
    ops: tuple[CreateOp, ...] = decision.creates if isinstance(decision, Batch) else (decision.op,)
    caller = gw.caller(decision.token)
    if decision.token:
        gw.remember_token(caller, decision.token)
    plan: JobPlan | None = None
    if call.job_id is not None:
        job = await load_job(gw, call.job_id, caller)
        if job.status in CLOSED_JOB_STATES:
            raise JobClosed(f"Job {job.job_id} is {job.status.value}: it takes no more creates")
        wrong = [op for op in ops if op.account_id not in (None, job.account_id)]
        if wrong:
            raise BadRequest(f"Job {job.job_id} is for {job.account_id}, not {wrong[0].account_id}")
        plan = await slots.plan(
            gw,
            job,
            ops,
            named_slot=None if batch else call.slot_no,
            request_id=request_id,
            token=decision.token,
        )
        if plan.replay is not None:
            gw.metrics.replays.labels("slot").inc()
            return _replay(call, *plan.replay)
        if plan.refused and (not batch or call.content_type not in (_FORM, _JSON)):
            # A single create, or a multipart batch (its files cannot be re-encoded): refuse
            # the whole request; nothing is sent.
            await _release(gw, plan, request_id)
            raise next(iter(plan.refused.values()))
        sent_ops = tuple(plan.send)
    else:
        sent_ops = ops
    references = _op_references(call) if batch else {}
    intents = []
    for op in sent_ops:
        account = op.account_id
        if op.entity_type == "copy":
            account = await _copy_account(gw, op, decision.token, call.version_prefix)
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
                # A copy's row names the entity it copies (reconciliation looks for its copies);
                # a parent created by an earlier op of the batch is named by that op's index.
                parent_id=references.get(op.parent_id or "", op.parent_id),
                name=op.name,
                job_id=call.job_id,
                slot_no=plan.slot_of(op.index) if plan else None,
            )
        )
    rows: dict[int, int] = {}
    try:
        async with slots.parent_caps(gw, () if plan is not None else sent_ops):
            if intents:
                written = gw.ledger.write_intents(intents, now=_now(gw))
                row_ids = await _timed(gw, "intents", written)
                rows = {i.op_index: row for i, row in zip(intents, row_ids, strict=True)}
    except GatewayError:
        if plan is not None:
            await _release(gw, plan, request_id)
        raise
    body = call.body
    kept: list[int] | None = None
    size = decision.size if isinstance(decision, Batch) else 1
    if plan is not None and batch and plan.refused:
        body, kept = _without_refused(call, plan)
    if kept is not None and not kept:
        # Every op was answered by the gateway: nothing goes to Graph.
        answer = merge(size, [], [], _own(plan, request_id))
        return CreateResult(_json_response(200, answer, request_id))
    headers = call.headers
    if kept is not None:
        headers.popall("Content-Length", None)
    headers["Accept-Encoding"] = _accept_encoding(call.request.headers.get("Accept-Encoding"))
    kind = "batch" if batch else ("copy" if ops[0].entity_type == "copy" else "create")
    started = gw.clock.monotonic()
    try:
        with map_errors(create=True):
            data: Any = body() if callable(body) else body
            async with gw.session.request(
                call.request.method,
                call.url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=gw.timeout,
            ) as upstream:
                raw = await upstream.read()
                status, up_headers = upstream.status, upstream.headers
    except OutcomeUnknown:
        gw.metrics.upstream_errors.labels("no_answer").inc()
        unknown: dict[int, OpOutcome] = {
            op.index: Unknown("no answer from Graph") for op in sent_ops
        }
        await _settle(gw, request_id, intents, rows, unknown, plan)
        raise
    except GatewayError as exc:
        # Not sent (connection refused) or not sent whole (an upload past its limit): Graph
        # cannot have created anything from it.
        gw.metrics.upstream_errors.labels("not_sent").inc()
        failed: dict[int, OpOutcome] = {op.index: Failed(_transport(exc)) for op in sent_ops}
        await _settle(gw, request_id, intents, rows, failed, plan)
        raise
    finally:
        gw.metrics.upstream_latency.labels(kind).observe(gw.clock.monotonic() - started)
    decoded = _decode(raw, up_headers.get("Content-Encoding"))
    doc = parse_json(decoded)
    if kept is not None and isinstance(doc, list):
        # Judge each sent op by its own entry, then give the caller the whole batch back.
        by_position = dict(zip(kept, doc, strict=False))
        full = [by_position.get(i) for i in range(size)]
        outcomes = judge_batch(sent_ops, status, full)
        await _settle(gw, request_id, intents, rows, outcomes, plan)
        answer = merge(len(full), kept, doc, _own(plan, request_id) if plan else {})
        out_headers = response_headers(up_headers)
        out_headers.popall("Content-Encoding", None)
        out_headers["X-Gateway-Request-Id"] = request_id
        body_bytes = json.dumps(answer, separators=(",", ":")).encode()
        return CreateResult(
            web.Response(status=status, body=body_bytes, headers=out_headers),
            unknown=any(isinstance(o, Unknown) for o in outcomes.values()),
        )
    outcomes = (
        judge_batch(sent_ops, status, doc) if batch else {ops[0].index: judge(ops[0], status, doc)}
    )
    await _settle(gw, request_id, intents, rows, outcomes, plan)
    out_headers = response_headers(up_headers)
    out_headers["X-Gateway-Request-Id"] = request_id
    if plan is not None and not batch and plan.slot_of(ops[0].index) is not None:
        out_headers["X-Gateway-Slot"] = str(plan.slot_of(ops[0].index))
    return CreateResult(
        web.Response(status=status, body=raw, headers=out_headers),
        unknown=any(isinstance(o, Unknown) for o in outcomes.values()),
    )


_ID_REFERENCE = re.compile(r"^\{result=([^:{}]+):\$\.id\}$")


def _op_references(call: CreateCall) -> dict[str, str]:
    """`{result=NAME:$.id}` → `{op=INDEX}` for every named op of a batch, so a row whose parent
    is created by the same batch can find it in the ledger (the op's own row)."""
    ops = call.decision.creates if isinstance(call.decision, Batch) else ()
    if not isinstance(call.body, bytes) or not any(
        (op.parent_id or "").startswith("{result=") for op in ops
    ):
        return {}
    raw = RawRequest(
        method=call.request.method,
        path=call.request.path,
        query={},
        content_type=call.content_type,
        authorization=None,
        body=call.body,
    )
    parsed = parse_batch_body(request_params(raw))
    if parsed is None:
        return {}
    names = {
        str(op["name"]): index
        for index, op in enumerate(parsed.ops)
        if isinstance(op, dict) and op.get("name")
    }
    return {f"{{result={name}:$.id}}": f"{{op={index}}}" for name, index in names.items()}


def _own(plan: JobPlan | None, request_id: str) -> dict[int, dict[str, Any]]:
    if plan is None:
        return {}
    return {i: slots.refused_entry(exc, request_id) for i, exc in plan.refused.items()}


def _json_response(status: int, doc: Any, request_id: str) -> web.Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json; charset=UTF-8",
        "X-Gateway-Request-Id": request_id,
    }
    return web.Response(status=status, body=body, headers=headers)


def _without_refused(call: CreateCall, plan: JobPlan) -> tuple[bytes, list[int]]:
    """The batch body without the ops the gateway answers itself."""
    assert isinstance(call.body, bytes)  # noqa: S101  # batches are always read whole
    params = request_params(
        RawRequest(
            method=call.request.method,
            path=call.request.path,
            query={},
            content_type=call.content_type,
            authorization=None,
            body=call.body,
        )
    )
    parsed = parse_batch_body(params)
    if parsed is None:  # pragma: no cover - classify accepted this batch
        raise BadRequest("The batch could not be read")
    kept = [i for i in range(len(parsed.ops)) if i not in plan.refused]
    return encode(parsed, kept, call.content_type), kept


async def _release(gw: Gateway, plan: JobPlan, request_id: str) -> None:
    outcomes = [
        SlotOutcome(plan.job.job_id, kind, no, request_id, SlotState.FREE)
        for held in plan.held.values()
        for kind, no in held
    ]
    if outcomes:
        with contextlib.suppress(GatewayError):
            await gw.jobs.complete_slots(outcomes, now=_now(gw))


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
    plan: JobPlan | None = None,
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
        if plan is not None:
            moved = slots.slot_outcomes(plan, outcomes, request_id)
            await _timed(gw, "slots", gw.jobs.complete_slots(moved, now=_now(gw)))
            for slot in moved:
                gw.metrics.slot_transitions.labels(slot.entity_type, slot.state).inc()
    except StoreError as exc:
        logs.event(
            "ledger_settle_failed",
            request_id=request_id,
            rows=len(settled),
            discovered=len(found),
            error=exc.message,
            level=40,
        )
