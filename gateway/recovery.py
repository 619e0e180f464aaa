"""The recovery worker: resolves `sending` and `unknown` ledger rows by looking on Graph.

At start (after a crash, every `sending` row is an attempt nobody is waiting for) and then
every `[recovery] interval_seconds`: rows are grouped by where their entity would appear,
the parent's children are listed on Graph, and gateway.core.reconcile decides which entity
each row became. Adopted rows become `created` (their job slot too); rows Graph shows nothing
for, long enough after the attempt, become `failed` and free their slot. Nothing is ever
re-sent from here. Reads use the caller's token if this process still holds it in memory,
else GATEWAY_ROLLBACK_TOKEN; without either a row waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from gateway import logs
from gateway.context import Gateway
from gateway.core.reconcile import Absent, Adopt, Candidate, Pending, match
from gateway.errors import GatewayError
from gateway.model import EntityQuery, EntityRecord, EntityState, Outcome
from gateway.upstream import map_errors

# Where each type's entities are listed, by the kind of parent its row records.
_EDGE = {"campaign": "campaigns", "adset": "adsets", "ad": "ads", "adcreative": "adcreatives"}
_SOURCE_FIELD = {"campaign": "source_campaign_id", "adset": "source_adset_id", "ad": "source_ad_id"}
_PAGES = 20  # at most this many pages of children per parent and round


@dataclass
class RecoveryReport:
    adopted: int = 0
    absent: int = 0
    waiting: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def _ts(raw: Any) -> float | None:
    try:
        return datetime.strptime(str(raw), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


async def _unresolved(gw: Gateway) -> list[EntityRecord]:
    rows: list[EntityRecord] = []
    for state in (EntityState.SENDING, EntityState.UNKNOWN):
        before = None
        while True:
            page = await gw.ledger.entities(EntityQuery(state=state, before_id=before, limit=500))
            rows.extend(page.items)
            if page.next_before_id is None:
                break
            before = page.next_before_id
    return rows


async def _children(
    gw: Gateway, token: str, path: str, fields: str, name: str | None
) -> list[dict[str, Any]]:
    params: dict[str, str] = {"fields": fields, "limit": "500", "access_token": token}
    if name is not None:
        params["filtering"] = json.dumps([{"field": "name", "operator": "EQUAL", "value": name}])
    out: list[dict[str, Any]] = []
    for _ in range(_PAGES):
        with map_errors(create=False):
            async with gw.session.get(
                f"{gw.settings.upstream}/{path}", params=params, timeout=gw.timeout
            ) as resp:
                doc = await resp.json(content_type=None)
        if resp.status != 200 or not isinstance(doc, dict):
            raise GatewayError(f"Graph answered {resp.status} listing {path}")
        out.extend(d for d in doc.get("data", []) if isinstance(d, dict))
        after = (doc.get("paging") or {}).get("cursors", {}).get("after")
        if not after or "next" not in (doc.get("paging") or {}):
            break
        params["after"] = after
    return out


async def _group_key(gw: Gateway, row: EntityRecord) -> tuple[str, str, str | None] | None:
    """(list path, fields, name filter) where the row's entity would appear, or None."""
    if row.entity_type == "copy":
        source = await gw.ledger.find_by_graph_id(row.parent_id or "")
        if source is None or source.entity_type not in _SOURCE_FIELD:
            return None
        landing = source.parent_id if source.entity_type != "campaign" else source.account_id
        if not landing:
            return None
        fields = f"id,name,created_time,{_SOURCE_FIELD[source.entity_type]}"
        return f"{landing}/{_EDGE[source.entity_type]}", fields, None
    if row.entity_type not in _EDGE:
        return None  # images and videos carry no name to look for
    parent = row.account_id if row.entity_type in ("campaign", "adcreative") else row.parent_id
    if not parent or parent.startswith("{result="):
        return None
    return f"{parent}/{_EDGE[row.entity_type]}", "id,name,created_time", row.name or ""


async def recover_once(gw: Gateway) -> RecoveryReport:
    """One pass over every unresolved row."""
    report = RecoveryReport()
    now = gw.clock.now()
    policy = gw.policy.recovery
    groups: dict[tuple[str, str, str | None, str], list[EntityRecord]] = defaultdict(list)
    busy: set[tuple[str, str, str | None, str]] = set()
    for row in await _unresolved(gw):
        key = await _group_key(gw, row)
        if key is None:
            report.skipped["not_listable"] = report.skipped.get("not_listable", 0) + 1
            continue
        full_key = (*key, row.caller)
        in_flight = (
            row.state is EntityState.SENDING
            and now - row.created_at.timestamp() < policy.in_flight_seconds
        )
        if in_flight:
            busy.add(full_key)  # a sibling may still be answered: decide the group later
        groups[full_key].append(row)
    for (path, fields, name, caller), rows in groups.items():
        if (path, fields, name, caller) in busy:
            report.waiting += len(rows)
            continue
        token = gw.token_for(caller)
        if token is None:
            report.skipped["no_token"] = report.skipped.get("no_token", 0) + len(rows)
            continue
        try:
            listed = await _children(gw, token, path, fields, name)
        except GatewayError as exc:
            logs.event("recovery_lookup_failed", path=path, error=exc.message, level=30)
            report.waiting += len(rows)
            continue
        await _decide(gw, rows, listed, now, report)
    if report.adopted or report.absent:
        logs.event("recovery", **{k: v for k, v in vars(report).items() if v})
    return report


async def _decide(
    gw: Gateway,
    rows: list[EntityRecord],
    listed: list[dict[str, Any]],
    now: float,
    report: RecoveryReport,
) -> None:
    policy = gw.policy.recovery
    source_field = next((f for f in _SOURCE_FIELD.values() if any(f in d for d in listed)), None)
    candidates = []
    for item in listed:
        created = _ts(item.get("created_time"))
        key = str(item.get(source_field) if source_field else item.get("name"))
        if created is not None and item.get("id"):
            candidates.append(Candidate(str(item["id"]), key, created))
    known = {
        c.graph_id for c in candidates if await gw.ledger.find_by_graph_id(c.graph_id) is not None
    }
    pending = [
        Pending(
            r.id,
            (r.parent_id if r.entity_type == "copy" else r.name) or "",
            r.created_at.timestamp(),
        )
        for r in rows
    ]
    decisions = match(
        pending,
        candidates,
        known,
        now=now,
        clock_skew=policy.clock_skew_seconds,
        give_up_after=policy.give_up_seconds,
    )
    by_id = {r.id: r for r in rows}
    at = datetime.fromtimestamp(now, UTC)
    for decision in decisions:
        row = by_id[decision.entity_id]
        if isinstance(decision, Adopt):
            outcome = Outcome(row.id, EntityState.CREATED, decision.graph_id)
            graph_id: str | None = decision.graph_id
            report.adopted += 1
        elif isinstance(decision, Absent):
            error = {"status": None, "code": None, "message": "reconciled: not on Graph"}
            outcome = Outcome(row.id, EntityState.FAILED, error=error)
            graph_id = None
            report.absent += 1
        else:
            report.waiting += 1
            continue
        await gw.ledger.settle([outcome], now=at)
        gw.metrics.reconciliations.labels("adopted" if graph_id else "absent").inc()
        if row.job_id and row.slot_no is not None:
            slot_type = row.entity_type
            if slot_type == "copy":
                source = await gw.ledger.find_by_graph_id(row.parent_id or "")
                slot_type = source.entity_type if source else slot_type
            await gw.jobs.resolve_slot(
                row.job_id, slot_type, row.slot_no, graph_id=graph_id, now=at
            )


@asynccontextmanager
async def recovery_worker(gw: Gateway) -> AsyncIterator[None]:
    """Run `recover_once` at start and every interval until the context exits."""

    async def loop() -> None:
        while True:
            try:
                await recover_once(gw)
            except (GatewayError, aiohttp.ClientError) as exc:
                logs.event("recovery_failed", error=str(exc), level=40)
            await gw.clock.sleep(gw.policy.recovery.interval_seconds)

    # One long-lived task owned by this context: cancelled and awaited on exit.
    task = asyncio.get_running_loop().create_task(loop(), name="gateway-recovery")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
