"""Looking on Graph for what a create with an unknown outcome became (DESIGN.md §6).

Shared by the create path (which reconciles before it would send again) and the recovery
worker (which resolves what nobody is waiting for). Rows are grouped by where their entity
would appear: the parent's children with the row's name (or, for a copy, the copies of its
source). gateway.core.reconcile decides; this module lists, reads the ledger and waits.

Every read goes through the throttle gate and the circuit breaker like any other call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from gateway.attempt import Tally, read_retried, refusal
from gateway.context import Gateway
from gateway.core.reconcile import Candidate, Decision, Pending, Undecided, match
from gateway.errors import GatewayError, GraphRefused
from gateway.model import EntityQuery, EntityRecord, EntityState

# Where each type's entities are listed, by the kind of parent its row records.
EDGE = {"campaign": "campaigns", "adset": "adsets", "ad": "ads", "adcreative": "adcreatives"}
SOURCE_FIELD = {"campaign": "source_campaign_id", "adset": "source_adset_id", "ad": "source_ad_id"}
CHILD_EDGES = {"campaign": ("adsets", "ads"), "adset": ("ads",), "ad": ()}
_PAGES = 20  # at most this many pages of children per parent and look
_SIBLING_POLL_SECONDS = 0.05

GroupKey = tuple[str, str, str | None]  # (list path, fields, name filter)


def parse_time(raw: Any) -> float | None:
    try:
        return datetime.strptime(str(raw), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


async def unresolved(gw: Gateway) -> list[EntityRecord]:
    """Every `sending` and `unknown` row. Read sending, unknown, then sending again: a row
    moving between the two states while they are read (sent again after a look-up, or
    settled unknown) is never missed; one seen in both states counts as `sending`."""
    rows: dict[int, EntityRecord] = {}
    for state in (EntityState.SENDING, EntityState.UNKNOWN, EntityState.SENDING):
        for row in await _rows_in(gw, state):
            if row.id not in rows or row.state is EntityState.SENDING:
                rows[row.id] = row
    return list(rows.values())


async def _rows_in(gw: Gateway, state: EntityState) -> list[EntityRecord]:
    rows: list[EntityRecord] = []
    before = None
    while True:
        page = await gw.ledger.entities(EntityQuery(state=state, before_id=before, limit=500))
        rows.extend(page.items)
        if page.next_before_id is None:
            return rows
        before = page.next_before_id


async def children(
    gw: Gateway,
    token: str,
    path: str,
    fields: str,
    name: str | None,
    *,
    account: str | None = None,
    tally: Tally | None = None,
    since: int | None = None,
) -> list[dict[str, Any]]:
    """Every child listed at *path* (filtered by *name* when given, and by created_time after
    *since*, POSIX seconds), all pages. Raises GatewayError when Graph cannot list them (after
    retrying transient failures)."""
    params: dict[str, str] = {"fields": fields, "limit": "500", "access_token": token}
    filters: list[dict[str, Any]] = []
    if name is not None:
        filters.append({"field": "name", "operator": "EQUAL", "value": name})
    if since is not None:
        filters.append({"field": "created_time", "operator": "GREATER_THAN", "value": since})
    if filters:
        params["filtering"] = json.dumps(filters)
    # The look-up's tries are its own (they are not tries of the create it serves), inside the
    # same deadline.
    tally = (
        Tally(tally.started, tally.gate_deadline, queued_ms=tally.queued_ms)
        if tally is not None
        else Tally.start(gw)
    )
    out: list[dict[str, Any]] = []
    pages = 0
    while pages < _PAGES:
        reply = await read_retried(
            gw,
            tally,
            url=f"{gw.settings.upstream}/{path}",
            params=params,
            account=account,
            kind="lookup",
        )
        doc = reply.doc
        if reply.status != 200 or not isinstance(doc, dict):
            raise GraphRefused(refusal(reply, f"a listing of {path}"), reply.error)
        out.extend(d for d in doc.get("data", []) if isinstance(d, dict))
        pages += 1
        paging = doc.get("paging") or {}
        after = (paging.get("cursors") or {}).get("after")
        if not after or "next" not in paging:
            break
        params["after"] = after
    return out


async def group_key(gw: Gateway, row: EntityRecord) -> GroupKey | None:
    """(list path, fields, name filter) where the row's entity would appear, or None."""
    if row.entity_type == "copy":
        source = await gw.ledger.find_by_graph_id(row.parent_id or "")
        if source is None or source.entity_type not in SOURCE_FIELD:
            return None
        landing = source.parent_id if source.entity_type != "campaign" else source.account_id
        if not landing or landing.startswith("{"):
            return None
        fields = f"id,name,created_time,{SOURCE_FIELD[source.entity_type]}"
        return f"{landing}/{EDGE[source.entity_type]}", fields, None
    if row.entity_type not in EDGE:
        return None  # images and videos carry no name to look for
    parent = row.account_id if row.entity_type in ("campaign", "adcreative") else row.parent_id
    if parent and parent.startswith("{op="):
        parent = await _sibling_id(gw, row, parent)
    if not parent or parent.startswith("{"):
        return None
    return f"{parent}/{EDGE[row.entity_type]}", "id,name,created_time", row.name or ""


async def _sibling_id(gw: Gateway, row: EntityRecord, reference: str) -> str | None:
    """The Graph id of the batch op `{op=N}` of the row's own request, once it is known."""
    index = reference.removeprefix("{op=").removesuffix("}")
    for sibling in await gw.ledger.request_entities(row.request_id):
        if str(sibling.op_index) == index and sibling.state is EntityState.CREATED:
            return sibling.graph_id
    return None


async def candidates(gw: Gateway, listed: list[dict[str, Any]]) -> tuple[list[Candidate], set[str]]:
    """The listed children as candidates, and the ids among them the ledger already holds."""
    source_field = next((f for f in SOURCE_FIELD.values() if any(f in d for d in listed)), None)
    out = []
    for item in listed:
        created = parse_time(item.get("created_time"))
        key = str(item.get(source_field) if source_field else item.get("name"))
        if created is not None and item.get("id"):
            out.append(Candidate(str(item["id"]), key, created))
    known = {c.graph_id for c in out if await gw.ledger.find_by_graph_id(c.graph_id) is not None}
    return out, known


def pending_of(rows: Sequence[EntityRecord]) -> list[Pending]:
    return [
        Pending(
            r.id,
            (r.parent_id if r.entity_type == "copy" else r.name) or "",
            r.created_at.timestamp(),
        )
        for r in rows
    ]


async def _peers(gw: Gateway, key: GroupKey, mine: Sequence[EntityRecord]) -> list[EntityRecord]:
    """The group's other unresolved rows as the ledger holds them now."""
    ours = {r.id for r in mine}
    return [
        r
        for r in await unresolved(gw)
        if r.id not in ours and _may_share(r, mine[0]) and await group_key(gw, r) == key
    ]


def _states(rows: Sequence[EntityRecord]) -> set[tuple[int, EntityState]]:
    return {(r.id, r.state) for r in rows}


def _may_share(row: EntityRecord, other: EntityRecord) -> bool:
    """Whether two rows can have one group key, from their own fields (no I/O): same caller
    and type, and (but for copies, grouped by where their source lands) the same name."""
    return (
        row.caller == other.caller
        and row.entity_type == other.entity_type
        and (row.entity_type == "copy" or row.name == other.name)
    )


async def reconcile_now(
    gw: Gateway, tally: Tally, rows: Sequence[EntityRecord], token: str
) -> dict[int, Decision]:
    """Decide *rows* (this request's `unknown` rows) by looking on Graph now.

    Per group: wait (within the request's deadline) until no other row of the group is
    `sending` — a sibling still in flight may be the one that created what Graph lists —
    then list the children and match every `unknown` row of the group at once, oldest attempt
    first, so that concurrent reconcilers of one group agree. A row is called absent only once
    its attempt is `listing_lag_seconds` old (Graph lists a fresh entity late); until then
    this waits too. Rows that cannot be decided in time are Undecided.
    """
    policy = gw.policy.recovery
    decided: dict[int, Decision] = {r.id: Undecided(r.id) for r in rows}
    groups: dict[GroupKey, list[EntityRecord]] = {}
    for row in rows:
        key = await group_key(gw, row)
        if key is not None:
            groups.setdefault(key, []).append(row)
    for key, mine in groups.items():
        ours = {r.id for r in mine}
        path, fields, name = key

        while True:
            # Siblings settle, are adopted or are sent again by their own requests meanwhile.
            peers = await _peers(gw, key, mine)
            if any(r.state is EntityState.SENDING for r in peers):
                if tally.remaining(gw) <= _SIBLING_POLL_SECONDS:
                    break  # a sibling still in flight: undecided
                await gw.clock.sleep(_SIBLING_POLL_SECONDS)
                continue
            try:
                listed = await children(
                    gw, token, path, fields, name, account=mine[0].account_id, tally=tally
                )
            except GatewayError:
                break
            found, known = await candidates(gw, listed)
            # One consistent view or none: a sibling settled (its entity now "known" while its
            # row was read as unknown) or started while Graph was read would shift who gets
            # which entity, and two rows could take one. Look again instead.
            if _states(await _peers(gw, key, mine)) != _states(peers):
                if tally.remaining(gw) <= _SIBLING_POLL_SECONDS:
                    break
                continue
            now = gw.clock.now()
            decisions = match(
                pending_of(mine + peers),
                found,
                known,
                now=now,
                clock_skew=policy.clock_skew_seconds,
                give_up_after=policy.listing_lag_seconds,
            )
            for decision in decisions:
                if decision.entity_id in ours:
                    decided[decision.entity_id] = decision
            if not any(isinstance(decided[i], Undecided) for i in ours):
                break
            # Too fresh to call absent: look again once the youngest of ours is old enough.
            youngest = max(r.created_at.timestamp() for r in mine)
            wait = max(_SIBLING_POLL_SECONDS, youngest + policy.listing_lag_seconds - now)
            if wait >= tally.remaining(gw):
                break
            await gw.clock.sleep(wait)
    return decided
