"""Recording what became of a create: the ledger rows, the job slots, and the answer shapes
shared by the create path (gateway.engine) and its delivery loop (gateway.delivery)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway import logs, slots
from gateway.context import Gateway
from gateway.core.classify import Batch, Create
from gateway.core.outcome import Created, Failed, OpOutcome, Unknown
from gateway.errors import GatewayError, StoreError
from gateway.model import Discovered, EntityState, Intent, Outcome
from gateway.slots import JobPlan

Body = bytes | Callable[[], AsyncIterator[bytes]]


def now_utc(gw: Gateway) -> datetime:
    return datetime.fromtimestamp(gw.clock.now(), UTC)


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


def own_entries(plan: JobPlan | None, request_id: str) -> dict[int, dict[str, Any]]:
    if plan is None:
        return {}
    return {i: slots.refused_entry(exc, request_id) for i, exc in plan.refused.items()}


def json_response(status: int, doc: Any, request_id: str) -> web.Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json; charset=UTF-8",
        "X-Gateway-Request-Id": request_id,
    }
    return web.Response(status=status, body=body, headers=headers)


def transport_error(exc: GatewayError) -> dict[str, Any]:
    return {"status": None, "code": None, "message": f"not sent: {exc.message}"}


async def timed(gw: Gateway, op: str, call: Awaitable[Any]) -> Any:
    started = gw.clock.monotonic()
    try:
        return await call
    except StoreError:
        gw.metrics.ledger_failures.labels(op).inc()
        raise
    finally:
        gw.metrics.ledger_write_latency.labels(op).observe(gw.clock.monotonic() - started)


async def settle(
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
                        job_id=intent.job_id,
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
        await timed(gw, "settle", gw.ledger.settle(settled, now=now_utc(gw)))
        if found:
            await timed(gw, "discovered", gw.ledger.add_entities(found, now=now_utc(gw)))
        if plan is not None:
            moved = slots.slot_outcomes(plan, outcomes, request_id)
            await timed(gw, "slots", gw.jobs.complete_slots(moved, now=now_utc(gw)))
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
