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
    open_unpaced,
    parse_usage,
    record_throttle,
    try_admit,
    wait_for,
)
from gateway.errors import Throttled

R = TypeVar("R")
_FRESH = GateState()  # the state of a gate never written (frozen: safe to share)
# No usage header at all (the four of parse_usage, in the order observe() reads them).
_NO_USAGE = (None, None, None, None)
_CI_HEADERS = (CIMultiDictProxy, CIMultiDict)
# Parsed usage headers kept for reuse: Graph repeats the same values call after call (a quiet
# account's usage moves in whole percents), and parsing is pure, so an answer whose headers
# were seen before skips the JSON. Bounded: emptied when full (a few hundred small tuples).
_PARSED_MAX = 512
# Gate keys by (account, kind), kept for reuse likewise; emptied when full.
_KEYS_MAX = 4096
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
        return self.apply_now(keys, fn)

    def apply_now(self, keys: Sequence[str], fn: Transition[R]) -> R:
        """`apply` as a plain call: this store never waits, so the gate calls it without a
        coroutine on a call's path (the same single step, the same atomicity)."""
        states = self._states
        old = {key: states.get(key, _FRESH) for key in keys}
        result, new = fn(old)
        for key, state in new.items():
            if state is old.get(key):
                continue  # unchanged (the common case: an open gate admitting a call)
            # A gate that has seen an answer is never fresh: one float compared, not eight.
            if not state.observed_at and state == _FRESH:
                states.pop(key, None)  # a gate that knows nothing need not be kept
            else:
                states[key] = state
        return result

    def admits_freely(self, keys: Sequence[str], now: float) -> bool:
        """Whether `apply(keys, try_admit)` at *now* would admit at once and store nothing:
        every gate is open and unpaced (most calls), so the shell can skip the step."""
        states = self._states
        for key in keys:
            state = states.get(key)
            if state is not None and not open_unpaced(state, now):
                return False
        return True

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
        # The store when it is MemoryGateStore itself (a subclass may override `apply`): its
        # steps run without a coroutine, and an open gate admits without one at all.
        self._local = self._store if type(self._store) is MemoryGateStore else None
        self._lanes: dict[str, _Lane] = {}
        self._parsed: dict[tuple[tuple[str | None, ...], str | None], tuple[Usage, ...]] = {}
        self._keys: dict[tuple[str | None, str], tuple[str, ...]] = {}

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
        if isinstance(headers, _CI_HEADERS):
            # Case-insensitive look-ups: what parse_usage reads is these four values.
            get = headers.get
            raw = (get(APP_USAGE), get(AD_ACCOUNT_USAGE), get(BUC_USAGE), get(INSIGHTS_THROTTLE))
            if raw == _NO_USAGE:
                return  # an answer without usage headers (some nodes, non-Graph upstreams)
            usages = self._parsed.get((raw, account))
            if usages is None:
                usages = parse_usage(headers, account)
                if len(self._parsed) >= _PARSED_MAX:
                    self._parsed.clear()
                self._parsed[raw, account] = usages
        else:
            usages = parse_usage(headers, account)
        if not usages:
            return
        now = self._clock.now()
        policy = self.policy

        def fn(states: dict[str, GateState]) -> tuple[dict[str, GateState], dict[str, GateState]]:
            return states, apply_usages(states, usages, now, policy)

        keys = [u.gate for u in usages]
        if self._local is not None:
            self._update_now(self._local, keys, fn, now)  # most answers: nothing awaited
        else:
            await self._update(keys, fn, now)

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

        await self._update(keys, fn, now)
        return waits[0]

    def depths(self) -> dict[str, int]:
        """Calls waiting now, by lane: "account" (every ad account's queue) and "app"."""
        out = {"account": 0, "app": 0}
        for key, lane in self._lanes.items():
            out["app" if key == APP else "account"] += len(lane.queue)
        return out

    def lanes(self) -> dict[str, dict[str, int]]:
        """This process's calls by lane (an ad account, or "app"): waiting and in flight. The
        gates are shared (Redis) but the queues are each process's own; a parent of workers
        adds theirs to its `snapshot()` with `add_lanes`."""
        return {
            key: {"queue_depth": len(lane.queue), "in_flight": lane.in_flight}
            for key, lane in self._lanes.items()
        }

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

    def _gates(self, account: str | None, kind: str) -> tuple[str, ...]:
        keys = self._keys.get((account, kind))
        if keys is None:
            if len(self._keys) >= _KEYS_MAX:
                self._keys.clear()
            keys = self._keys[account, kind] = gates_for(account, kind)
        return keys

    async def _enter(
        self, lane: _Lane, keys: tuple[str, ...], lane_key: str, deadline: float
    ) -> None:
        if not lane.queue:
            now = self._clock.now()
            if self._local is not None:
                if self._local.apply_now(keys, partial(try_admit, now=now)) <= 0:
                    return
            elif await self._store.apply(keys, partial(try_admit, now=now)) <= 0:
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

    async def _update(
        self, keys: Sequence[str], fn: Transition[dict[str, GateState]], now: float
    ) -> None:
        """Apply *fn* (returning the old states) and wake the queues whose gates changed:
        the head of each to look again, every waiter where the wait grew (it may now pass a
        deadline, and a call must not wait just to be refused)."""
        if self._local is not None:
            self._update_now(self._local, keys, fn, now)
            return
        new_states: dict[str, GateState] = {}
        old = await self._store.apply(keys, _keeping(fn, new_states))
        self._wake(old, new_states, now)

    def _update_now(
        self,
        store: MemoryGateStore,
        keys: Sequence[str],
        fn: Transition[dict[str, GateState]],
        now: float,
    ) -> None:
        """`_update` on the in-process store: no coroutine on an answer's path."""
        new_states: dict[str, GateState] = {}
        old = store.apply_now(keys, _keeping(fn, new_states))
        self._wake(old, new_states, now)

    def _wake(
        self, old: dict[str, GateState], new_states: dict[str, GateState], now: float
    ) -> None:
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
        keys = gate._gates(self._account, self._kind)
        lane = gate._lanes.get(self._lane_key)
        if lane is None:
            lane = gate._lanes[self._lane_key] = _Lane()
        self._lane = lane
        lane.users += 1
        local = gate._local
        if local is not None and not lane.queue and local.admits_freely(keys, started):
            # Nobody queued and every gate open and unpaced: admitted with nothing to store
            # and nothing awaited, so no time passed in a queue.
            lane.in_flight += 1
            self._admitted = True
            return 0.0
        deadline = self._deadline
        if deadline is None:
            deadline = started + gate.policy.max_wait_seconds
        try:
            await gate._enter(lane, keys, self._lane_key, deadline)
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


def _keeping(
    fn: Transition[dict[str, GateState]], new_states: dict[str, GateState]
) -> Transition[dict[str, GateState]]:
    """*fn*, keeping in *new_states* what its last run returned (the run the store kept)."""

    def run(states: dict[str, GateState]) -> tuple[dict[str, GateState], dict[str, GateState]]:
        old, new = fn(states)
        new_states.clear()
        new_states.update(new)
        return old, new

    return run


def add_lanes(snapshot: dict[str, Any], lanes: Mapping[str, Mapping[str, int]]) -> None:
    """Add another process's `lanes()` to a `snapshot()`'s queue depths and in-flight counts
    (an account only that process has calls for is added)."""
    accounts = snapshot["accounts"]
    for key, counts in lanes.items():
        entry = snapshot["app"] if key == APP else accounts.setdefault(key, _idle())
        entry["queue_depth"] += int(counts.get("queue_depth", 0))
        entry["in_flight"] += int(counts.get("in_flight", 0))
    snapshot["accounts"] = dict(sorted(accounts.items()))


def _idle() -> dict[str, Any]:
    return {"wait_seconds": 0.0, "queue_depth": 0, "in_flight": 0, "gates": {}}
