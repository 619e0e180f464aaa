"""Idempotency-Key on the create path (DESIGN.md §6; Stripe and the IETF draft).

The first request with a key runs; a repeat with the same key, caller and account gets the
stored answer with `Idempotent-Replayed: true`; the same key on a different request is 422; a
repeat while the first is still running waits for it (409 `request_in_progress` past the
wait). An answer that leaves a create's outcome unknown is never stored: the key stays held
until its lease ends, and a later claim that finds the earlier request's rows still unknown
answers 504 `outcome_unknown` instead of sending the create again.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web

from gateway.context import Gateway
from gateway.errors import (
    GatewayError,
    IdempotencyMismatch,
    OutcomeUnknown,
    RequestInProgress,
)
from gateway.model import Claimed, EntityState, InProgress, Mismatch, Replay, StoredResponse

# Poll a key held by another request at these intervals (seconds) while waiting for it.
_POLL_FIRST, _POLL_MAX = 0.02, 0.5
# Headers of a stored answer that are per-response, not part of what is replayed.
_NOT_STORED = frozenset({"date", "server", "content-length", "x-gateway-request-id"})


def _now(gw: Gateway) -> datetime:
    return datetime.fromtimestamp(gw.clock.now(), UTC)


def _stored(response: web.Response) -> StoredResponse:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in _NOT_STORED}
    return StoredResponse(response.status, headers, bytes(response.body or b""))  # type: ignore[arg-type]  # web.Response.body is bytes here


def _replayed(stored: StoredResponse, request_id: str) -> web.Response:
    headers = dict(stored.headers)
    headers["Idempotent-Replayed"] = "true"
    headers["X-Gateway-Request-Id"] = request_id
    return web.Response(status=stored.status, body=stored.body, headers=headers)


async def run_once(
    gw: Gateway,
    *,
    scope: str,
    key: str,
    fingerprint: str,
    request_id: str,
    run: Callable[[], Awaitable[tuple[web.Response, bool]]],
) -> web.Response:
    """Run *run* at most once per key; *run* returns (answer, outcome unknown?)."""
    policy = gw.policy.idempotency
    lease = timedelta(seconds=policy.lease_seconds)
    waited_until = gw.clock.monotonic() + policy.wait_seconds
    delay = _POLL_FIRST
    while True:
        claim = await gw.idempotency.claim(
            scope, key, fingerprint, request_id=request_id, now=_now(gw), lease=lease
        )
        match claim:
            case Replay(response=stored):
                gw.metrics.replays.labels("idempotency_key").inc()
                return _replayed(stored, request_id)
            case Mismatch():
                raise IdempotencyMismatch("This Idempotency-Key was used with a different request")
            case InProgress():
                if gw.clock.monotonic() >= waited_until:
                    raise RequestInProgress(
                        "A request with this Idempotency-Key is still in progress",
                        retry_after=policy.wait_seconds,
                    )
                await gw.clock.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)
                continue
            case Claimed(previous_request_id=previous) if previous:
                try:
                    earlier = await _earlier_outcome(gw, previous, request_id)
                except OutcomeUnknown:
                    # The key must keep pointing at the request whose creates are unresolved,
                    # or a later take-over would find no rows and send the create again.
                    await gw.idempotency.hand_back(
                        scope, key, request_id=request_id, previous=previous
                    )
                    raise
                if earlier is not None:
                    await gw.idempotency.finish(
                        scope,
                        key,
                        request_id=request_id,
                        response=_stored(earlier),
                        now=_now(gw),
                        retain_until=_now(gw) + timedelta(hours=policy.retention_hours),
                    )
                    gw.metrics.replays.labels("idempotency_key").inc()
                    return earlier
        break
    try:
        response, unknown = await run()
    except OutcomeUnknown:
        raise  # the key stays held: nothing is stored for an unknown outcome
    except GatewayError:
        # Refused before anything reached Graph (cap, ledger, bad request, not sent): a
        # retry with the key runs afresh.
        await gw.idempotency.release(scope, key, request_id=request_id)
        raise
    if not unknown:
        retain = _now(gw) + timedelta(hours=policy.retention_hours)
        await gw.idempotency.finish(
            scope,
            key,
            request_id=request_id,
            response=_stored(response),
            now=_now(gw),
            retain_until=retain,
        )
    return response


async def _earlier_outcome(gw: Gateway, previous: str, request_id: str) -> web.Response | None:
    """What an earlier holder of the key (crashed, or its outcome unknown) left behind.

    None when it created nothing (run afresh). Its single created entity is replayed; an
    outcome still unknown refuses the request (504) rather than send the create again.
    """
    rows = await gw.ledger.request_entities(previous)
    if any(r.state in (EntityState.SENDING, EntityState.UNKNOWN) for r in rows):
        raise OutcomeUnknown(
            "An earlier request with this Idempotency-Key has an unknown outcome that is being "
            "reconciled; nothing was sent again"
        )
    created = [r for r in rows if r.state is EntityState.CREATED and r.graph_id]
    if not created:
        return None
    if len(created) == 1:
        body = json.dumps({"id": created[0].graph_id}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        return _replayed(StoredResponse(200, headers, body), request_id)
    raise OutcomeUnknown(
        "An earlier request with this Idempotency-Key created "
        f"{', '.join(str(r.graph_id) for r in created)}; its answer was lost, nothing was sent "
        "again",
    )
