"""gateway.ratequeue: per-ad-account FIFO queues that wait as the throttle gates say.

Driven by a manual clock: `advance()` moves virtual time and wakes the sleepers that are due,
so a 5-minute block takes no real time. Nothing here sleeps for real.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.clock import Clock
from gateway.core.ratelimit import GateState, ThrottlePolicy
from gateway.errors import Throttled
from gateway.ratequeue import GateStore, MemoryGateStore, ThrottleGate, add_lanes

T0 = 1_700_000_000.0
BUC_THROTTLE = {"error": {"code": 80004, "error_subcode": 2446079, "message": "(#80004) ..."}}
APP_THROTTLE = {"code": 4, "subcode": None}


class ManualClock:
    """Virtual time: `sleep()` parks the caller until `advance()` passes its wake-up time."""

    def __init__(self, start: float = T0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future  # cancelling the sleeper cancels the future; advance() skips it

    @property
    def sleeping(self) -> int:
        return sum(not future.done() for _, _, future in self._sleepers)

    async def settle(self) -> None:
        """Let every runnable task run until it blocks again (on the clock or an event)."""
        for _ in range(500):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, future = heapq.heappop(self._sleepers)
            if future.done():
                continue
            self._now = max(self._now, when)
            future.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()


def _clock_conforms(clock: ManualClock) -> Clock:
    return clock  # mypy: the manual clock is a Clock


def _store_conforms(store: MemoryGateStore) -> GateStore:
    return store  # mypy: the memory store is a GateStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gate(clock: ManualClock) -> ThrottleGate:
    return ThrottleGate(ThrottlePolicy(), clock)


class Calls:
    """Calls through the gate as tasks, recording the order and time each one started."""

    def __init__(self, gate: ThrottleGate, clock: ManualClock, group: asyncio.TaskGroup) -> None:
        self.gate, self.clock, self.group = gate, clock, group
        self.started: list[tuple[str, float, float]] = []  # (name, clock time, waited ms)
        self.refused: list[tuple[str, Throttled]] = []

    async def call(self, name: str, account: str | None, **kwargs: Any) -> None:
        try:
            async with self.gate.slot(account, **kwargs) as waited_ms:
                self.started.append((name, self.clock.now(), waited_ms))
        except Throttled as exc:
            self.refused.append((name, exc))

    async def start(self, name: str, account: str | None, **kwargs: Any) -> None:
        """Start a call and let it run until it waits (so calls queue in start order)."""
        _ = await self.spawn(name, account, **kwargs)

    async def spawn(self, name: str, account: str | None, **kwargs: Any) -> asyncio.Task[None]:
        """`start`, returning the call's task (to cancel it)."""
        task = self.group.create_task(self.call(name, account, **kwargs))
        await self.clock.settle()
        return task

    def names(self) -> list[str]:
        return [name for name, _, _ in self.started]

    def timeline(self) -> list[tuple[str, float, int]]:
        """(name, seconds after T0, whole milliseconds waited) of each call that started."""
        return [(name, when - T0, round(ms)) for name, when, ms in self.started]


async def run_calls(gate: ThrottleGate, clock: ManualClock, scenario: Any) -> Calls:
    async with asyncio.TaskGroup() as group:
        calls = Calls(gate, clock, group)
        await scenario(calls)
    return calls


async def test_an_open_gate_lets_a_call_through_without_waiting(gate: ThrottleGate) -> None:
    """No usage known: the slot is granted at once and reports 0 ms waited."""
    async with gate.slot("act_1001") as waited_ms:
        assert waited_ms == 0.0
    assert (await gate.snapshot())["accounts"] == {}


async def test_a_blocked_accounts_calls_proceed_in_fifo_order_after_the_block(
    gate: ThrottleGate, clock: ManualClock
) -> None:
    """Account blocked 60 s: five queued calls all start, in order, once 60 s have passed."""
    assert await gate.throttled("act_1001", BUC_THROTTLE, {}) == 60.0

    async def scenario(calls: Calls) -> None:
        for i in range(5):
            await calls.start(f"a{i}", "act_1001", deadline=T0 + 120)
            await clock.advance(1.0)  # each one queues a second after the last
        snap = await gate.snapshot()
        assert snap["accounts"]["act_1001"]["queue_depth"] == 5
        await clock.advance(54.9)  # T0 + 59.9
        assert calls.started == []
        await clock.advance(0.2)

    calls = await run_calls(gate, clock, scenario)
    assert calls.names() == ["a0", "a1", "a2", "a3", "a4"]
    assert {when for _, when, _ in calls.started} == {T0 + 60}
    assert [round(ms) for _, _, ms in calls.started] == [60000, 59000, 58000, 57000, 56000]
    assert calls.refused == []
    assert (await gate.snapshot())["accounts"]["act_1001"]["queue_depth"] == 0


async def test_another_account_proceeds_at_once_while_one_waits(
    gate: ThrottleGate, clock: ManualClock
) -> None:
    """A's queue (blocked 60 s) never delays B: B's calls start with the clock standing still."""
    await gate.throttled("act_1001", BUC_THROTTLE, {})

    async def scenario(calls: Calls) -> None:
        for i in range(3):
            await calls.start(f"a{i}", "act_1001")
        for i in range(3):
            await calls.start(f"b{i}", "act_1002")
        await calls.start("none", None)
        assert calls.names() == ["b0", "b1", "b2", "none"]
        assert {when for _, when, _ in calls.started} == {T0}
        await clock.advance(60)

    calls = await run_calls(gate, clock, scenario)
    assert calls.names() == ["b0", "b1", "b2", "none", "a0", "a1", "a2"]


async def test_a_full_queue_refuses_with_a_429_throttled(clock: ManualClock) -> None:
    """Past queue_max_per_account the next call is refused at once, with the wait ahead."""
    gate = ThrottleGate(ThrottlePolicy(queue_max_per_account=3), clock)
    await gate.throttled("act_1001", BUC_THROTTLE, {})

    async def scenario(calls: Calls) -> None:
        for i in range(4):
            await calls.start(f"a{i}", "act_1001")
        assert [name for name, _ in calls.refused] == ["a3"]
        await clock.advance(60)

    calls = await run_calls(gate, clock, scenario)
    assert calls.names() == ["a0", "a1", "a2"]
    ((_, exc),) = calls.refused
    assert (exc.status, exc.spec.code, exc.spec.transient) == (429, 9010, True)
    assert exc.reason == "throttled"
    assert exc.retry_after == 60.0
    assert "queue is full" in exc.message
    envelope = exc.envelope("req-1")["error"]
    assert (envelope["gateway_reason"], envelope["code"]) == ("throttled", 9010)


async def test_a_deadline_shorter_than_the_block_is_refused_at_once(
    gate: ThrottleGate, clock: ManualClock
) -> None:
    """Never wait just to fail: a 10 s deadline against a 60 s block gets 429 immediately."""
    await gate.throttled("act_1001", BUC_THROTTLE, {})
    with pytest.raises(Throttled) as info:
        async with gate.slot("act_1001", deadline=T0 + 10):
            pytest.fail("the slot must not be granted")
    assert info.value.retry_after == 60.0
    assert "deadline" in info.value.message
    assert info.value.error_data == {"ad_account_id": "act_1001", "wait": 60.0}
    assert clock.now() == T0
    assert clock.sleeping == 0
    assert (await gate.snapshot())["accounts"]["act_1001"]["queue_depth"] == 0


async def test_without_a_deadline_a_call_waits_at_most_max_wait_seconds(
    clock: ManualClock,
) -> None:
    """max_wait_seconds 30 against a 60 s block: refused at first, accepted 31 s later."""
    gate = ThrottleGate(ThrottlePolicy(max_wait_seconds=30), clock)
    await gate.throttled("act_1001", BUC_THROTTLE, {})
    with pytest.raises(Throttled):
        async with gate.slot("act_1001"):
            pass
    await clock.advance(31)

    async def scenario(calls: Calls) -> None:
        await calls.start("a", "act_1001")
        await clock.advance(29)

    calls = await run_calls(gate, clock, scenario)
    assert calls.timeline() == [("a", 60, 29000)]


async def test_the_app_gate_blocks_every_account(gate: ThrottleGate, clock: ManualClock) -> None:
    """Code 4 (app limit) holds every account's calls, and calls without an account, 300 s."""
    assert await gate.throttled("act_1001", APP_THROTTLE) == 300.0

    async def scenario(calls: Calls) -> None:
        await calls.start("a", "act_1001", deadline=T0 + 400)
        await calls.start("b", "act_1002", deadline=T0 + 400)
        await calls.start("none", None, deadline=T0 + 400)
        snap = await gate.snapshot()
        assert snap["app"]["wait_seconds"] == 300.0
        assert snap["app"]["queue_depth"] == 1
        await clock.advance(299)
        assert calls.started == []
        await clock.advance(1)

    calls = await run_calls(gate, clock, scenario)
    assert sorted(calls.names()) == ["a", "b", "none"]
    assert {when for _, when, _ in calls.started} == {T0 + 300}


async def test_a_block_on_one_buc_type_does_not_hold_the_accounts_other_types(
    gate: ThrottleGate,
) -> None:
    await gate.throttled("act_1001", {"code": 80000, "error_subcode": 2446079})  # ads_insights
    async with gate.slot("act_1001") as waited_ms:  # ads_management
        assert waited_ms == 0.0
    with pytest.raises(Throttled):
        async with gate.slot("act_1001", kind="ads_insights", deadline=T0 + 5):
            pass


async def test_usage_headers_at_full_usage_close_the_gate_until_the_regain_time(
    gate: ThrottleGate, clock: ManualClock
) -> None:
    """What the simulator sends when an account is blocked: BUC in minutes, reset in seconds."""
    headers = {
        "X-Business-Use-Case-Usage": json.dumps(
            {
                "1001": [
                    {
                        "type": "ads_management",
                        "call_count": 100,
                        "total_cputime": 100,
                        "total_time": 100,
                        "estimated_time_to_regain_access": 1,
                    }
                ]
            }
        ),
        "X-Ad-Account-Usage": '{"acc_id_util_pct": 100, "reset_time_duration": 42}',
    }
    await gate.observe(headers, "act_1001")

    async def scenario(calls: Calls) -> None:
        await calls.start("a", "act_1001")
        await clock.advance(41.9)
        assert calls.started == []
        await clock.advance(0.1)

    calls = await run_calls(gate, clock, scenario)
    assert calls.timeline() == [("a", 42, 42000)]


async def test_high_usage_spaces_an_accounts_calls_out(
    gate: ThrottleGate, clock: ManualClock
) -> None:
    """At 90 % usage (threshold 80 %, 1 s at 100 %) calls start 0.5 s apart, in order."""
    await gate.observe({"X-Ad-Account-Usage": '{"acc_id_util_pct": 90}'}, "act_1001")

    async def scenario(calls: Calls) -> None:
        for i in range(3):
            await calls.start(f"a{i}", "act_1001")
        await calls.start("b", "act_1002")
        await clock.advance(2)

    calls = await run_calls(gate, clock, scenario)
    assert [(n, w - T0) for n, w, _ in calls.started] == [
        ("a0", 0.0),
        ("b", 0.0),
        ("a1", 0.5),
        ("a2", 1.0),
    ]


async def test_a_queue_that_pacing_would_carry_past_the_deadline_is_refused_at_once(
    gate: ThrottleGate, clock: ManualClock
) -> None:
    await gate.observe({"X-Ad-Account-Usage": '{"acc_id_util_pct": 99}'}, "act_1001")  # 0.95 s

    async def scenario(calls: Calls) -> None:
        for i in range(4):
            await calls.start(f"a{i}", "act_1001", deadline=T0 + 2)
        assert [name for name, _ in calls.refused] == ["a3"]  # would start at 2.85 s
        await clock.advance(3)

    calls = await run_calls(gate, clock, scenario)
    assert calls.names() == ["a0", "a1", "a2"]


async def test_a_longer_block_refuses_queued_calls_it_would_carry_past_their_deadline(
    gate: ThrottleGate, clock: ManualClock
) -> None:
    """Queued calls are refused as soon as a new block makes their deadline unreachable."""
    await gate.throttled("act_1001", BUC_THROTTLE, {})

    async def scenario(calls: Calls) -> None:
        await calls.start("short", "act_1001", deadline=T0 + 90)
        await calls.start("long", "act_1001", deadline=T0 + 600)
        await calls.start("tight", "act_1001", deadline=T0 + 100)
        await clock.advance(10)
        regain = {
            "X-Business-Use-Case-Usage": json.dumps(
                {"1001": [{"type": "ads_management", "estimated_time_to_regain_access": 5}]}
            )
        }
        assert await gate.throttled("act_1001", BUC_THROTTLE, regain) == 300.0
        await clock.settle()
        assert sorted(name for name, _ in calls.refused) == ["short", "tight"]
        assert clock.now() == T0 + 10
        await clock.advance(300)

    calls = await run_calls(gate, clock, scenario)
    assert calls.timeline() == [("long", 310, 310000)]


async def test_a_block_set_by_another_replica_is_found_by_the_head_and_the_deadlines(
    clock: ManualClock,
) -> None:
    """A change this gate did not make (a shared store) wakes no one: the head finds it when
    it wakes, queued calls when their deadline comes; nobody starts while blocked."""
    store = MemoryGateStore()
    gate = ThrottleGate(ThrottlePolicy(), clock, store)
    await gate.throttled("act_1001", BUC_THROTTLE, {})

    async def scenario(calls: Calls) -> None:
        await calls.start("head", "act_1001", deadline=T0 + 500)
        await calls.start("next", "act_1001", deadline=T0 + 90)
        blocked = GateState(blocked_until=T0 + 400)
        await store.apply(["act_1001"], lambda s: (None, {"act_1001": blocked}))
        await clock.advance(60)
        assert calls.started == []
        assert calls.refused == []
        await clock.advance(30)  # the second call's deadline
        assert [name for name, _ in calls.refused] == ["next"]
        await clock.advance(310)

    calls = await run_calls(gate, clock, scenario)
    assert calls.timeline() == [("head", 400, 400000)]


async def test_a_call_still_queued_at_its_deadline_is_refused_then(
    clock: ManualClock,
) -> None:
    """Another replica lifts the block (no wake here): the head sleeps on, so a call queued
    behind it with an open-looking gate gives up at its deadline rather than start late."""
    store = MemoryGateStore()
    gate = ThrottleGate(ThrottlePolicy(), clock, store)
    await gate.throttled("act_1001", BUC_THROTTLE, {})

    async def scenario(calls: Calls) -> None:
        await calls.start("head", "act_1001")
        await clock.advance(10)
        await store.apply(
            ["act_1001:ads_management"],
            lambda s: (None, {"act_1001:ads_management": GateState()}),
        )
        await calls.start("behind", "act_1001", deadline=T0 + 20)
        await clock.advance(10)
        ((name, exc),) = calls.refused
        assert (name, exc.retry_after) == ("behind", 0.0)
        await clock.advance(40)

    calls = await run_calls(gate, clock, scenario)
    assert calls.timeline() == [("head", 60, 60000)]


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_moves_up(
    gate: ThrottleGate, clock: ManualClock
) -> None:
    await gate.throttled("act_1001", BUC_THROTTLE, {})

    async def scenario(calls: Calls) -> None:
        head = await calls.spawn("head", "act_1001")
        middle = await calls.spawn("middle", "act_1001")
        await calls.start("last", "act_1001")
        middle.cancel()
        head.cancel()
        await clock.settle()
        assert (await gate.snapshot())["accounts"]["act_1001"]["queue_depth"] == 1
        await clock.advance(60)

    calls = await run_calls(gate, clock, scenario)
    assert calls.names() == ["last"]
    assert (await gate.snapshot())["accounts"]["act_1001"]["queue_depth"] == 0


async def test_errors_that_are_no_throttle_close_nothing(gate: ThrottleGate) -> None:
    assert await gate.throttled("act_1001", {"code": 100, "error_subcode": 33}) is None
    assert await gate.throttled("act_1001", {"code": 613, "error_subcode": 1487632}) is None
    assert await gate.throttled("act_1001", "garbage") is None
    assert await gate.throttled(None, BUC_THROTTLE) is None  # an account limit, no account
    async with gate.slot("act_1001") as waited_ms:
        assert waited_ms == 0.0


async def test_a_non_throttle_errors_headers_are_still_observed(gate: ThrottleGate) -> None:
    headers = {"X-App-Usage": '{"call_count": 100}'}
    assert await gate.throttled("act_1001", {"code": 100}, headers) is None
    assert (await gate.snapshot())["app"]["wait_seconds"] == 60.0


async def test_snapshot_reports_each_accounts_gates_wait_and_queue(
    gate: ThrottleGate, clock: ManualClock
) -> None:
    await gate.throttled("act_1001", BUC_THROTTLE, {"X-App-Usage": '{"call_count": 50}'})
    await gate.observe({"X-Ad-Account-Usage": '{"acc_id_util_pct": 90}'}, "act_1002")
    await gate.observe({}, "act_1002")  # no headers: nothing changes

    async def scenario(calls: Calls) -> None:
        await calls.start("a", "act_1001")
        snap = await gate.snapshot()
        assert snap["now"] == T0
        a = snap["accounts"]["act_1001"]
        assert (a["wait_seconds"], a["queue_depth"], a["in_flight"]) == (60.0, 1, 0)
        gate_a = a["gates"]["act_1001:ads_management"]
        assert (gate_a["reason"], gate_a["blocked_until"], gate_a["wait_seconds"]) == (
            "80004/2446079",
            T0 + 60,
            60.0,
        )
        b = snap["accounts"]["act_1002"]["gates"]["act_1002"]
        assert (b["usage_pct"], b["spacing_seconds"]) == (90.0, 0.5)
        assert snap["app"]["gates"]["app"]["usage_pct"] == 50.0
        await clock.advance(60)

    await run_calls(gate, clock, scenario)


async def test_in_flight_counts_calls_inside_their_slot(gate: ThrottleGate) -> None:
    async with gate.slot("act_1001"), gate.slot("act_1001"):
        snap = await gate.snapshot()
        assert snap["accounts"]["act_1001"]["in_flight"] == 2
    assert (await gate.snapshot())["accounts"] == {}


async def test_the_memory_store_keeps_only_gates_that_know_something() -> None:
    store = MemoryGateStore()
    known = GateState(usage_pct=5.0)

    def fn(states: dict[str, GateState]) -> tuple[int, dict[str, GateState]]:
        assert states == {"a": GateState(), "b": GateState()}
        return 7, {"a": known, "b": GateState()}

    assert await store.apply(["a", "b"], fn) == 7
    assert await store.snapshot() == {"a": known}
    await store.apply(["a"], lambda s: (None, {"a": GateState()}))
    assert await store.snapshot() == {}


# --- the in-process fast paths (no change in behaviour, less work per call) -----------------


def _graph_headers(**usage: str) -> CIMultiDictProxy[str]:
    """Response headers as aiohttp gives them (a case-insensitive multidict)."""
    headers = CIMultiDict({"Content-Type": "application/json", "x-fb-trace-id": "AbC"})
    for name, value in usage.items():
        headers[name.replace("_", "-")] = value
    return CIMultiDictProxy(headers)


async def test_an_answer_seen_before_is_observed_again_at_its_own_time(
    gate: ThrottleGate, clock: ManualClock
) -> None:
    """Parsed usage headers are reused, their effect is not: each answer moves the gate."""
    headers = _graph_headers(x_app_usage='{"call_count": 90}')
    await gate.observe(headers, None)
    await clock.advance(5)
    await gate.observe(_graph_headers(x_app_usage='{"call_count": 90}'), None)
    app = (await gate.snapshot())["app"]["gates"]["app"]
    assert (app["usage_pct"], app["spacing_seconds"], app["observed_at"]) == (90.0, 0.5, T0 + 5)


async def test_the_same_headers_for_another_account_speak_for_that_account(
    gate: ThrottleGate,
) -> None:
    headers = _graph_headers(x_ad_account_usage='{"acc_id_util_pct": 100}')
    await gate.observe(headers, "act_1001")
    await gate.observe(headers, "act_1002")
    await gate.observe(headers, None)  # no account: X-Ad-Account-Usage names none
    accounts = (await gate.snapshot())["accounts"]
    assert sorted(accounts) == ["act_1001", "act_1002"]
    assert accounts["act_1002"]["wait_seconds"] == 60.0


async def test_usage_headers_are_read_whatever_their_case_and_their_number(
    gate: ThrottleGate,
) -> None:
    """More distinct answers than the parse cache keeps: each one still counts."""
    for pct in range(700):
        doc = {"call_count": pct % 100, "seq": pct}  # 700 distinct values
        headers = CIMultiDict({"X-APP-USAGE": json.dumps(doc)})
        await gate.observe(CIMultiDictProxy(headers), None)
    assert (await gate.snapshot())["app"]["gates"]["app"]["usage_pct"] == 99.0
    await gate.observe(_graph_headers(), None)  # none of the usage headers: nothing changes
    assert (await gate.snapshot())["app"]["gates"]["app"]["usage_pct"] == 99.0


async def test_an_open_gate_admits_at_once_and_stores_nothing(clock: ManualClock) -> None:
    store = MemoryGateStore()
    gate = ThrottleGate(ThrottlePolicy(), clock, store)
    await gate.observe(_graph_headers(x_app_usage='{"call_count": 10}'), "act_1001")
    before = await store.snapshot()
    async with gate.slot("act_1001") as waited_ms:
        assert waited_ms == 0.0
        assert (await gate.snapshot())["accounts"]["act_1001"]["in_flight"] == 1
    assert await store.snapshot() == before
    assert (await gate.snapshot())["accounts"] == {}


async def test_a_paced_gate_still_records_each_start(clock: ManualClock) -> None:
    """Above the slow-down threshold a call is no free pass: its start is remembered."""
    store = MemoryGateStore()
    gate = ThrottleGate(ThrottlePolicy(), clock, store)
    await gate.observe(_graph_headers(x_ad_account_usage='{"acc_id_util_pct": 90}'), "act_1001")
    async with gate.slot("act_1001"):
        pass
    assert (await store.snapshot())["act_1001"].admitted_at == T0


async def test_a_store_that_overrides_apply_sees_every_step(clock: ManualClock) -> None:
    """The shortcuts are MemoryGateStore's own: a subclass (a test double, a wrapper) that
    overrides `apply` is called for every admission and observation."""

    class Counting(MemoryGateStore):
        def __init__(self) -> None:
            super().__init__()
            self.applied = 0

        async def apply(self, keys: Any, fn: Any) -> Any:
            self.applied += 1
            return await super().apply(keys, fn)

    store = Counting()
    gate = ThrottleGate(ThrottlePolicy(), clock, store)
    async with gate.slot("act_1001"):
        pass
    await gate.observe(_graph_headers(x_app_usage='{"call_count": 10}'), "act_1001")
    assert store.applied == 2


def test_add_lanes_sums_another_processes_queues_into_a_snapshot() -> None:
    """A parent's /admin/v1/accounts: its snapshot plus each worker's lanes; an account only a
    worker has calls for appears, idle otherwise; the app lane adds up too."""
    snapshot: dict[str, Any] = {
        "now": 0.0,
        "app": {"wait_seconds": 0.0, "queue_depth": 1, "in_flight": 2, "gates": {}},
        "accounts": {
            "act_2": {"wait_seconds": 5.0, "queue_depth": 3, "in_flight": 1, "gates": {"act_2": {}}}
        },
    }
    add_lanes(
        snapshot,
        {"app": {"queue_depth": 1, "in_flight": 0}, "act_2": {"queue_depth": 4, "in_flight": 1}},
    )
    add_lanes(snapshot, {"act_1": {"queue_depth": 2, "in_flight": 0}})
    assert snapshot["app"]["queue_depth"] == 2
    assert snapshot["app"]["in_flight"] == 2
    assert snapshot["accounts"]["act_2"] == {
        "wait_seconds": 5.0,
        "queue_depth": 7,
        "in_flight": 2,
        "gates": {"act_2": {}},
    }
    assert snapshot["accounts"]["act_1"]["queue_depth"] == 2
    assert list(snapshot["accounts"]) == ["act_1", "act_2"]
