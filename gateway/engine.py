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
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from aiohttp import web
from multidict import CIMultiDict

from gateway import slots
from gateway.attempt import Tally, try_once
from gateway.context import Gateway
from gateway.core.batchplan import encode, merge, parse_batch_body
from gateway.core.classify import Batch, CreateOp, RawRequest, request_params
from gateway.delivery import Delivery
from gateway.errors import BadRequest, GatewayError, JobClosed, StoreError
from gateway.jobs import load_job
from gateway.model import (
    CLOSED_JOB_STATES,
    CreateSource,
    Intent,
    SlotOutcome,
    SlotState,
)
from gateway.settle import (
    CreateCall,
    CreateResult,
    json_response,
    now_utc,
    own_entries,
    timed,
)
from gateway.slots import JobPlan
from gateway.upstream import accept_encoding

_FORM, _JSON = "application/x-www-form-urlencoded", "application/json"


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
        reply = await try_once(
            gw,
            Tally.start(gw),
            method="GET",
            url=url,
            params={"fields": "account_id", "access_token": token},
            headers=CIMultiDict(),
            data=None,
            account=None,
            create=False,
            kind="lookup",
        )
    except GatewayError:
        return None
    doc = reply.doc
    account = doc.get("account_id") if isinstance(doc, dict) else None
    return f"act_{account}" if account else None


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
    asked = _asked(call) if call.job_id is not None else {}
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
                params=asked.get(op.index),
            )
        )
    rows: dict[int, int] = {}
    try:
        async with slots.parent_caps(gw, () if plan is not None else sent_ops):
            if intents:
                written = gw.ledger.write_intents(intents, now=now_utc(gw))
                row_ids = await timed(gw, "intents", written)
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
        answer = merge(size, [], [], own_entries(plan, request_id))
        return CreateResult(json_response(200, answer, request_id))
    if kept is not None:
        call.headers.popall("Content-Length", None)
    call.headers["Accept-Encoding"] = accept_encoding(call.request.headers.get("Accept-Encoding"))
    delivery = Delivery(gw, call, sent_ops, intents, rows, plan, body, kept, size)
    try:
        return await delivery.run()
    finally:
        gw.reconciling.difference_update(rows.values())


# Never kept with a create's parameters (DESIGN.md §3.1: tokens are not stored).
_SECRET_PARAMS = frozenset({"access_token", "appsecret_proof", "appsecret_time"})


def _unversioned(path: str) -> str:
    path = path.lstrip("/")
    head, _, rest = path.partition("/")
    return rest if re.fullmatch(r"v\d+\.\d+", head) else path


def _kept(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in _SECRET_PARAMS}


def _asked(call: CreateCall) -> dict[int, dict[str, Any]]:
    """What each create of a job's request asked for, by op index, as `Intent.params` keeps
    it: {"path": unversioned, "params": {...}} without tokens. An op that depends on another
    op of its batch (`{result=...}`) or a body that cannot be read (a streamed upload) is not
    kept: such an entity is not made again by a repair."""
    if not isinstance(call.body, bytes) or call.content_type not in (_FORM, _JSON):
        return {}
    raw = RawRequest(
        method=call.request.method,
        path=call.request.path,
        query=call.request.query,
        content_type=call.content_type,
        authorization=None,
        body=call.body,
    )
    params = request_params(raw)
    if not isinstance(call.decision, Batch):
        op = call.decision.op
        return {op.index: {"path": _unversioned(call.request.path), "params": _kept(params)}}
    parsed = parse_batch_body(params)
    out: dict[int, dict[str, Any]] = {}
    for op in call.decision.creates:
        entry = parsed.ops[op.index] if parsed and op.index < len(parsed.ops) else None
        if not isinstance(entry, dict):
            continue
        url, body = str(entry.get("relative_url", "")), entry.get("body", "")
        if not isinstance(body, str) or "{result=" in unquote(url + body):
            continue
        path, _, query = url.partition("?")
        fields = dict(parse_qsl(query)) | dict(parse_qsl(body, keep_blank_values=True))
        out[op.index] = {"path": _unversioned(path), "params": _kept(fields)}
    return out


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
            await gw.jobs.complete_slots(outcomes, now=now_utc(gw))
