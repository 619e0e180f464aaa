"""The throttle gate: per-ad-account FIFO queues in front of Graph, waiting as core.ratelimit says.

Shell: the decisions are gateway.core.ratelimit's; this module keeps the queues, applies the
pure transitions through a `GateStore` and waits through the injected `Clock`. No lock is held
across a wait and every account has its own queue, so one account's waiting never delays
another's calls; only the app gate (an app-level limit) holds every account.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.clock import Clock
from gateway.core.ratelimit import (
    AD_ACCOUNT_USAGE,
    APP,
    APP_USAGE,
    BUC_USAGE,
    DEFAULT_KIND,
    INSIGHTS_THROTTLE,
    GateState,
    ThrottlePolicy,
    Usage,
    account_gate,
    apply_usages,
    error_codes,
    error_gate,
    estimate,
    gates_for,
    parse_usage,
    record_throttle,
    try_admit,
    wait_for,
)
from gateway.errors import Throttled

R = TypeVar("R")
_FRESH = GateState()  # the state of a gate never written (frozen: safe to share)
# Usage headers; aiohttp's header multidicts compare names case-insensitively.
_USAGE_HEADERS = (APP_USAGE, AD_ACCOUNT_USAGE, BUC_USAGE, INSIGHTS_THROTTLE)
Transition = Callable[[dict[str, GateState]], tuple[R, dict[str, GateState]]]


class GateStore(Protocol):
    """Gate states shared by every call of the gateway (one process now; Redis later)."""

    async def apply(self, keys: Sequence[str], fn: Transition[R]) -> R:
        """Atomically read the states of *keys* (a fresh `GateState()` for a key never
        written), run the pure *fn* on them, store the states it returns and return its
        result. No other `apply` on any of these keys interleaves. *fn* may run more than
        once (an optimistic backend retries on conflict), so it must be pure."""

    async def snapshot(self) -> dict[str, GateState]:
        """Every stored gate's state, for the admin API (not one atomic view across keys)."""


class MemoryGateStore:
    """Gate states in this process's memory: `apply` never awaits, so it is atomic here."""

    def __init__(self) -> None:
        self._states: dict[str, GateState] = {}

    async def apply(self, keys: Sequence[str], fn: Transition[R]) -> R:
        old = {key: self._states.get(key, _FRESH) for key in keys}
        result, new = fn(old)
        for key, state in new.items():
            if state is old.get(key):
                continue  # unchanged (the common case: an open gate admitting a call)
            if state == _FRESH:
                self._states.pop(key, None)  # a gate that knows nothing need not be kept
            else:
                self._states[key] = state
        return result

    async def snapshot(self) -> dict[str, GateState]:
        return dict(self._states)


@dataclass(eq=False)
class _Ticket:
    """One call waiting in its account's queue."""

    deadline: float
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Lane:
    """One ad account's queue (the "app" lane holds calls that name no ad account)."""

    queue: deque[_Ticket] = field(default_factory=deque)
    in_flight: int = 0  # admitted calls not yet finished
    users: int = 0  # calls inside slot() at all: the lane is dropped only when none are


class ThrottleGate:
    """Admits calls to Graph per ad account in FIFO order, as the gates allow.

    `async with gate.slot(account, deadline=...) as waited_ms:` returns when the account's
    gates and the app's are open and every earlier call of that account has started, or
    raises `Throttled` (429) at once when the queue is full or the wait would pass the
    deadline. `observe()` and `throttled()` feed what Graph's answers say.
    """

    def __init__(
        self, policy: ThrottlePolicy, clock: Clock, store: GateStore | None = None
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._store: GateStore = store or MemoryGateStore()
        self._lanes: dict[str, _Lane] = {}

    def slot(
        self, account_id: str | None, *, deadline: float | None = None, kind: str = DEFAULT_KIND
    ) -> Slot:
        """`async with gate.slot(account, deadline=...) as waited_ms:` waits for a turn to call
        Graph for *account_id* and gives the milliseconds waited.

        *deadline* is the latest start, on the clock's `now()` scale (default: now plus the
        policy's `max_wait_seconds`); *kind* is the call's business-use-case type.
        """
        return Slot(self, account_id, deadline, kind)

    async def observe(self, headers: Mapping[str, str], account: str | None) -> None:
        """Feed the usage headers of a Graph answer to a call for *account*."""
        if isinstance(headers, CIMultiDictProxy | CIMultiDict) and not any(
            name in headers for name in _USAGE_HEADERS
        ):
            return  # an answer without usage headers (reads of some nodes, non-Graph upstreams)
        usages = parse_usage(headers, account)
        if not usages:
            return
        now = self._clock.now()
        policy = self.policy

        def fn(states: dict[str, GateState]) -> tuple[dict[str, GateState], dict[str, GateState]]:
            return states, apply_usages(states, usages, now, policy)

        await self._update([u.gate for u in usages], fn)

    async def throttled(
        self, account: str | None, error: Any, headers: Mapping[str, str] | None = None
    ) -> float | None:
        """Feed a Graph error answer (envelope, `error` object or `{code, subcode}` summary)
        to a call for *account*. Returns the seconds until the gate it closed opens, or None
        when the error is no throttle to wait for (the caller passes it on)."""
        usages: tuple[Usage, ...] = parse_usage(headers or {}, account)
        codes = error_codes(error)
        gate = error_gate(account, *codes, self.policy) if codes else None
        keys = sorted({u.gate for u in usages} | ({gate} if gate else set()))
        if not keys:
            return None
        now = self._clock.now()
        policy = self.policy
        waits: list[float | None] = []

        def fn(states: dict[str, GateState]) -> tuple[dict[str, GateState], dict[str, GateState]]:
            wait, new = record_throttle(states, gate, codes, usages, now, policy)
            waits[:] = [wait]  # the last run is the one the store kept
            return states, new

        await self._update(keys, fn)
        return waits[0]

    def depths(self) -> dict[str, int]:
        """Calls waiting now, by lane: "account" (every ad account's queue) and "app"."""
        out = {"account": 0, "app": 0}
        for key, lane in self._lanes.items():
            out["app" if key == APP else "account"] += len(lane.queue)
        return out

    async def snapshot(self) -> dict[str, Any]:
        """Per ad account: its gates, the wait ahead, queued and in-flight calls; "app" alike."""
        now = self._clock.now()
        gates = await self._store.snapshot()
        owners: dict[str, dict[str, Any]] = {}

        def owner(key: str) -> dict[str, Any]:
            return owners.setdefault(key, _idle())

        for key, state in sorted(gates.items()):
            entry = owner(key.split(":", 1)[0])
            wait = wait_for(state, now)
            entry["gates"][key] = {**state.to_dict(), "wait_seconds": wait}
            entry["wait_seconds"] = max(entry["wait_seconds"], wait)
        for key, lane in self._lanes.items():
            entry = owner(key)
            entry["queue_depth"] = len(lane.queue)
            entry["in_flight"] = lane.in_flight
        app = owners.pop(APP, None) or _idle()
        return {"now": now, "app": app, "accounts": dict(sorted(owners.items()))}

    # --- internals ------------------------------------------------------------------------

    async def _enter(
        self, lane: _Lane, keys: tuple[str, ...], lane_key: str, deadline: float
    ) -> None:
        if not lane.queue:
            now = self._clock.now()
            if await self._store.apply(keys, partial(try_admit, now=now)) <= 0:
                return
        if len(lane.queue) >= self.policy.queue_max_per_account:
            wait = await self._estimate(keys, len(lane.queue))
            raise self._refusal(lane_key, wait, "its queue is full")
        ticket = _Ticket(deadline)
        lane.queue.append(ticket)
        try:
            while True:
                ticket.wake.clear()  # set again by any change from here on
                now = self._clock.now()
                ahead = lane.queue.index(ticket)
                if ahead == 0:
                    wait = await self._store.apply(keys, partial(try_admit, now=now))
                    if wait <= 0:
                        return
                else:
                    wait = await self._estimate(keys, ahead)
                # The deadline is the latest start: a call still behind others when it comes
                # gives up, even if the gates look open (the head may not know yet).
                if now + wait > deadline or (ahead and now >= deadline):
                    raise self._refusal(lane_key, wait, "the wait would pass the deadline")
                # The head sleeps until its gates open; the others until their deadline or
                # until a change wakes them (they became head, or a gate closed longer).
                await self._pause(wait if ahead == 0 else deadline - now, ticket.wake)
        finally:
            was_head = lane.queue[0] is ticket
            lane.queue.remove(ticket)
            if was_head and lane.queue:
                lane.queue[0].wake.set()

    async def _estimate(self, keys: tuple[str, ...], ahead: int) -> float:
        now = self._clock.now()

        def fn(states: dict[str, GateState]) -> tuple[float, dict[str, GateState]]:
            return estimate(states, now, ahead), states

        return await self._store.apply(keys, fn)

    async def _update(self, keys: Sequence[str], fn: Transition[dict[str, GateState]]) -> None:
        """Apply *fn* (returning the old states) and wake the queues whose gates changed:
        the head of each to look again, every waiter where the wait grew (it may now pass a
        deadline, and a call must not wait just to be refused)."""
        now = self._clock.now()
        new_states: dict[str, GateState] = {}

        def run(states: dict[str, GateState]) -> tuple[dict[str, GateState], dict[str, GateState]]:
            old, new = fn(states)
            new_states.clear()
            new_states.update(new)
            return old, new

        old = await self._store.apply(keys, run)
        for key, new in new_states.items():
            before = old[key]
            if (before.blocked_until, before.spacing_seconds) == (
                new.blocked_until,
                new.spacing_seconds,
            ):
                continue
            longer = wait_for(new, now) > wait_for(before, now) or (
                new.spacing_seconds > before.spacing_seconds
            )
            owner = key.split(":", 1)[0]
            lanes = self._lanes.values() if owner == APP else [self._lanes.get(owner)]
            for lane in lanes:
                if lane is None or not lane.queue:
                    continue
                for ticket in lane.queue if longer else (lane.queue[0],):
                    ticket.wake.set()

    async def _pause(self, seconds: float, wake: asyncio.Event) -> None:
        """Until *seconds* pass on the clock or *wake* is set, whichever comes first."""
        async with asyncio.TaskGroup() as group:
            timer = group.create_task(self._clock.sleep(seconds))
            waker = group.create_task(wake.wait())
            timer.add_done_callback(lambda _: waker.cancel())
            waker.add_done_callback(lambda _: timer.cancel())

    def _refusal(self, lane_key: str, wait: float, why: str) -> Throttled:
        return Throttled(
            f"Graph is throttling {lane_key}; {why} (about {wait:.0f} s)",
            retry_after=wait,
            error_data={"ad_account_id": lane_key if lane_key != APP else None, "wait": wait},
        )


class Slot:
    """The async context manager `ThrottleGate.slot()` returns (one use). A class, not a
    generator: it is on every call's path."""

    __slots__ = ("_account", "_admitted", "_deadline", "_gate", "_kind", "_lane", "_lane_key")

    def __init__(
        self, gate: ThrottleGate, account_id: str | None, deadline: float | None, kind: str
    ) -> None:
        self._gate, self._account, self._deadline, self._kind = gate, account_id, deadline, kind
        self._lane_key = account_gate(account_id) if account_id else APP
        self._lane: _Lane | None = None
        self._admitted = False

    async def __aenter__(self) -> float:
        gate = self._gate
        started = gate._clock.now()
        deadline = self._deadline
        if deadline is None:
            deadline = started + gate.policy.max_wait_seconds
        lane = self._lane = gate._lanes.setdefault(self._lane_key, _Lane())
        lane.users += 1
        try:
            await gate._enter(lane, gates_for(self._account, self._kind), self._lane_key, deadline)
        except BaseException:
            self._leave()
            raise
        lane.in_flight += 1
        self._admitted = True
        return max(0.0, gate._clock.now() - started) * 1000.0

    async def __aexit__(self, *exc: object) -> None:
        self._leave()

    def _leave(self) -> None:
        lane = self._lane
        if lane is None:
            return
        self._lane = None
        lane.in_flight -= self._admitted
        lane.users -= 1
        if not lane.users:
            del self._gate._lanes[self._lane_key]


def _idle() -> dict[str, Any]:
    return {"wait_seconds": 0.0, "queue_depth": 0, "in_flight": 0, "gates": {}}
