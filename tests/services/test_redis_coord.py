"""gateway.stores.redis_coord: breakers, throttle gates and the retry budget shared through Redis.

Two `RedisCoordinator`s on one Redis stand for two gateway replicas. Each test has its own
random key prefix and deletes its keys afterwards. Time is a manual clock; waits on Redis are
real (a few milliseconds), so tests poll for a condition instead of counting event-loop turns.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio

from gateway.breaker import (
    BreakerListener,
    BreakerRegistry,
    BreakerStore,
    MemoryBreakerStore,
)
from gateway.budget import BudgetStore, RetryBudget
from gateway.clock import Clock
from gateway.core.breaker import Admitted, Breaker, BreakerConfig, BreakerState, admit, record
from gateway.core.ratelimit import GateState, ThrottlePolicy
from gateway.core.retry import BudgetState, RetryPolicy, record_request
from gateway.errors import CircuitOpenError, StoreError, StoreUnavailable, Throttled
from gateway.ratequeue import GateStore, ThrottleGate
from gateway.stores.redis_coord import RedisCoordinator, open_coordinator

pytestmark = pytest.mark.redis

T0 = 1_700_000_000.0
BUC_THROTTLE = {"error": {"code": 80004, "error_subcode": 2446079, "message": "(#80004) ..."}}
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"


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
        await future

    @property
    def sleeping(self) -> int:
        return sum(not future.done() for _, _, future in self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper that is due."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (real time, 5 s at most) until *condition* holds: Redis round trips take real
    time, so counting event-loop turns is not enough."""
    async with asyncio.timeout(5.0):
        while not condition():  # noqa: ASYNC110 - the condition is the manual clock's state
            await asyncio.sleep(0.005)


def _conforms(c: RedisCoordinator) -> tuple[BreakerStore, GateStore, BudgetStore, Clock]:
    return c.breakers, c.gates, c.budget, ManualClock()  # mypy: each implements its protocol


@pytest.fixture
def prefix() -> str:
    return f"gateway-test:{uuid.uuid4().hex}:"


@pytest.fixture
async def raw(redis_url: str, prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client to look at the keys; deletes every key of the test's prefix at the end."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def replicas(
    redis_url: str, prefix: str, raw: redis.asyncio.Redis
) -> AsyncIterator[tuple[RedisCoordinator, RedisCoordinator]]:
    """Two coordinators on the same Redis and prefix: two replicas of the gateway."""
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(await open_coordinator(redis_url, prefix=prefix))
        two = await stack.enter_async_context(await open_coordinator(redis_url, prefix=prefix))
        yield one, two


@pytest.fixture
async def down() -> AsyncIterator[RedisCoordinator]:
    """A coordinator whose Redis is not there (nothing listens on port 1)."""
    async with RedisCoordinator.from_url(CLOSED_PORT_URL, prefix="unused:") as coordinator:
        yield coordinator


# --------------------------------------------------------------------------- breakers

CONFIG = BreakerConfig(
    minimum_calls=2, open_seconds=15.0, half_open_probes=2, half_open_successes_to_close=2
)


async def test_a_breaker_written_by_one_replica_is_read_by_another(
    replicas: tuple[RedisCoordinator, RedisCoordinator],
) -> None:
    """Calls recorded through one coordinator: the other loads the same state and counts."""
    one, two = replicas
    config = BreakerConfig(minimum_calls=10)

    def call(success: bool) -> Callable[[Breaker], tuple[Breaker, None]]:
        return lambda b: (record(b, success=success, duration=0.1, now=T0, probe=False), None)

    for success in (True, False, True):
        await one.breakers.apply("graph", config, call(success))
    _, after, decision = await two.breakers.apply("graph", config, lambda b: admit(b, T0))

    seen = await two.breakers.load("graph", config)
    assert seen == after == await one.breakers.load("graph", config)
    assert seen.config == config
    assert seen.state is BreakerState.CLOSED
    assert [(b.calls, b.failures) for b in seen.buckets] == [(3, 1)]
    assert decision == Admitted(probe=False, epoch=0)
    assert await two.breakers.names() == ["graph"]


async def test_a_stored_breaker_takes_the_config_it_is_read_with(
    replicas: tuple[RedisCoordinator, RedisCoordinator],
) -> None:
    """A reloaded policy applies at once: the config is not stored, the reader's is attached."""
    one, two = replicas
    await one.breakers.apply("graph", BreakerConfig(), lambda b: (b, None))
    assert (await two.breakers.load("graph", CONFIG)).config == CONFIG


async def test_a_breaker_opened_by_one_registry_rejects_on_another(
    replicas: tuple[RedisCoordinator, RedisCoordinator],
) -> None:
    """Two failures through registry A open the circuit; registry B refuses without calling."""
    one, two = replicas
    clock = ManualClock()
    reg_a = BreakerRegistry(CONFIG, clock=clock, store=one.breakers)
    reg_b = BreakerRegistry(CONFIG, clock=clock, store=two.breakers)
    for _ in range(2):
        async with reg_a.guard("graph") as call:
            call.failed()

    with pytest.raises(CircuitOpenError) as info:
        async with reg_b.guard("graph"):
            pytest.fail("an open circuit must not admit a call")
    assert info.value.retry_after == 15.0
    assert (await reg_b.snapshot())["graph"]["state"] == "open"


async def test_half_open_admits_at_most_half_open_probes_across_replicas(
    replicas: tuple[RedisCoordinator, RedisCoordinator],
) -> None:
    """Eight callers on two registries race when the circuit half-opens: exactly two (the
    configured probes) get through; their two successes close the circuit for both."""
    one, two = replicas
    clock = ManualClock()
    registries = [BreakerRegistry(CONFIG, clock=clock, store=c.breakers) for c in (one, two)]
    for _ in range(2):
        async with registries[0].guard("graph") as call:
            call.failed()
    clock.advance(15.0)

    async with AsyncExitStack() as stack:

        async def try_call(registry: BreakerRegistry) -> bool:
            try:
                await stack.enter_async_context(registry.guard("graph"))
            except CircuitOpenError:
                return False
            return True

        admitted = await asyncio.gather(*(try_call(registries[i % 2]) for i in range(8)))
        assert sum(admitted) == 2
        assert (await registries[1].snapshot())["graph"]["probes_in_flight"] == 2
    # Leaving the stack ends both probe calls without an exception: two successes.
    assert (await registries[1].snapshot())["graph"]["state"] == "closed"


# --------------------------------------------------------------------------- atomicity


async def test_concurrent_steps_from_two_replicas_lose_no_update(
    replicas: tuple[RedisCoordinator, RedisCoordinator],
) -> None:
    """200 gate and 200 budget increments, raced through both coordinators, all count."""
    one, two = replicas

    def bump(states: dict[str, GateState]) -> tuple[None, dict[str, GateState]]:
        state = states["counter"]
        return None, {"counter": GateState(strikes=state.strikes + 1, reason="test")}

    def count(state: BudgetState) -> tuple[BudgetState, None]:
        return record_request(state, T0), None

    await asyncio.gather(
        *(c.gates.apply(["counter"], bump) for c in (one, two) * 100),
        *(c.budget.apply(10, count) for c in (one, two) * 100),
    )

    assert (await two.gates.snapshot())["counter"].strikes == 200
    assert await one.budget.apply(10, lambda s: (s, sum(b.requests for b in s.buckets))) == 200


# --------------------------------------------------------------------------- throttle gates


async def test_a_throttle_met_by_one_replica_holds_the_others_calls(
    replicas: tuple[RedisCoordinator, RedisCoordinator],
) -> None:
    """Replica A meets a 60 s block: B refuses a call whose deadline is too close, and B's
    call with room to wait starts only once the block is over."""
    one, two = replicas
    clock = ManualClock()
    gate_a = ThrottleGate(ThrottlePolicy(), clock, store=one.gates)
    gate_b = ThrottleGate(ThrottlePolicy(), clock, store=two.gates)
    assert await gate_a.throttled("act_1001", BUC_THROTTLE, {}) == 60.0

    with pytest.raises(Throttled) as info:
        async with gate_b.slot("act_1001", deadline=T0 + 10):
            pytest.fail("the slot must not be granted")
    assert info.value.retry_after == 60.0

    started: list[float] = []

    async def call() -> None:
        async with gate_b.slot("act_1001", deadline=T0 + 120) as waited_ms:
            started.append(waited_ms)

    async with asyncio.TaskGroup() as group:
        group.create_task(call())
        await eventually(lambda: clock.sleeping == 1)
        clock.advance(59.9)
        await asyncio.sleep(0.05)
        assert started == []
        clock.advance(0.1)
    assert started == [60000.0]
    # Another account was never held.
    async with gate_b.slot("act_1002") as waited_ms:
        assert waited_ms == 0.0


async def test_a_gate_back_to_its_default_state_is_deleted(
    replicas: tuple[RedisCoordinator, RedisCoordinator], raw: redis.asyncio.Redis, prefix: str
) -> None:
    """A closed gate is stored with a TTL; once its state is GateState() again, its key is
    gone, and a gate that was never closed is not written at all."""
    one, two = replicas
    key = f"{prefix}gate:act_1001"

    def close(states: dict[str, GateState]) -> tuple[None, dict[str, GateState]]:
        return None, {"act_1001": GateState(blocked_until=T0 + 60), "act_1002": GateState()}

    await one.gates.apply(["act_1001", "act_1002"], close)
    assert 7000 < await raw.ttl(key) <= 7200
    assert await raw.exists(f"{prefix}gate:act_1002") == 0
    assert set(await two.gates.snapshot()) == {"act_1001"}

    await two.gates.apply(["act_1001"], lambda states: (None, {"act_1001": GateState()}))
    assert await raw.exists(key) == 0
    assert await one.gates.snapshot() == {}


async def test_the_budget_key_expires_after_a_few_windows(
    replicas: tuple[RedisCoordinator, RedisCoordinator], raw: redis.asyncio.Redis, prefix: str
) -> None:
    """The budget's key carries a TTL of three windows, renewed by each write."""
    one, _ = replicas
    await one.budget.apply(10, lambda s: (record_request(s, T0), None))
    assert 25 < await raw.ttl(f"{prefix}budget") <= 30


# --------------------------------------------------------------------------- retry budget


async def test_two_replicas_share_one_retry_allowance(
    replicas: tuple[RedisCoordinator, RedisCoordinator],
) -> None:
    """Floor of 1 retry/s over a 10 s window and no requests: 30 retries asked for at once
    through two budgets, exactly 10 allowed in all."""
    one, two = replicas
    clock = ManualClock()
    policy = RetryPolicy(budget_window_seconds=10, budget_min_retries_per_second=1.0)
    budgets = [RetryBudget(policy, clock, store=c.budget) for c in (one, two)]

    allowed = await asyncio.gather(*(budgets[i % 2].allow_retry() for i in range(30)))

    assert sum(allowed) == 10
    assert (await budgets[1].snapshot())["retries"] == 10


# --------------------------------------------------------------------------- Redis down


async def test_an_unreachable_redis_raises_store_unavailable_everywhere(
    down: RedisCoordinator,
) -> None:
    """Every operation on a Redis that is not there raises StoreUnavailable, with the driver's
    error as its cause, never a redis exception and never a default state."""
    with pytest.raises(StoreUnavailable):
        await open_coordinator(CLOSED_PORT_URL)
    operations: list[Callable[[], Any]] = [
        down.check,
        lambda: down.breakers.apply("graph", CONFIG, lambda b: admit(b, T0)),
        lambda: down.breakers.load("graph", CONFIG),
        down.breakers.names,
        lambda: down.gates.apply(["app"], lambda states: (None, states)),
        down.gates.snapshot,
        lambda: down.budget.apply(10, lambda s: (s, None)),
    ]
    for operation in operations:
        with pytest.raises(StoreUnavailable) as info:
            await operation()
        assert info.value.status == 503
        assert isinstance(info.value.__cause__, redis.RedisError | OSError | TimeoutError)


async def test_a_registry_with_a_memory_fallback_keeps_working_when_redis_is_down(
    down: RedisCoordinator,
) -> None:
    """The Redis store is down: calls are guarded by the process-local fallback breaker, which
    still opens after the configured failures, and listeners hear of each store error."""

    class Errors(BreakerListener):
        def __init__(self) -> None:
            self.seen: list[StoreError] = []

        def store_error(self, name: str, exc: StoreError) -> None:
            self.seen.append(exc)

    errors = Errors()
    registry = BreakerRegistry(
        CONFIG,
        clock=ManualClock(),
        store=down.breakers,
        fallback=MemoryBreakerStore(),
        listeners=[errors],
    )
    for _ in range(2):
        async with registry.guard("graph") as call:
            call.failed()
    with pytest.raises(CircuitOpenError):
        async with registry.guard("graph"):
            pytest.fail("the fallback breaker is open")

    assert len(errors.seen) == 3
    assert all(isinstance(exc, StoreUnavailable) for exc in errors.seen)
    assert (await registry.snapshot())["graph"]["state"] == "open"


# --------------------------------------------------------------------------- leases


async def test_a_lease_held_by_one_replica_makes_the_other_wait_until_it_is_released(
    replicas: tuple[RedisCoordinator, RedisCoordinator],
) -> None:
    one, two = replicas
    order: list[str] = []
    held = asyncio.Event()

    async def first() -> None:
        async with one.leases.hold("rollback:job:1"):
            held.set()
            order.append("one in")
            await asyncio.sleep(0.3)
            order.append("one out")

    async def second() -> None:
        await held.wait()
        async with two.leases.hold("rollback:job:1"):
            order.append("two in")

    await asyncio.gather(first(), second())
    assert order == ["one in", "one out", "two in"]


async def test_leases_of_different_names_do_not_wait_for_each_other(
    replicas: tuple[RedisCoordinator, RedisCoordinator],
) -> None:
    one, two = replicas
    async with (
        one.leases.hold("rollback:job:1"),
        asyncio.timeout(1.0),
        two.leases.hold("rollback:job:2"),
    ):
        pass


async def test_a_held_lease_is_renewed_past_its_ttl(
    replicas: tuple[RedisCoordinator, RedisCoordinator], raw: redis.asyncio.Redis
) -> None:
    """Held for four times its TTL: the key is still there and the other replica still waits."""
    one, two = replicas
    key = one.leases.key("rollback:job:1")
    async with one.leases.hold("rollback:job:1", ttl_seconds=0.3):
        waiter = asyncio.ensure_future(_enter(two, "rollback:job:1"))
        await asyncio.sleep(1.2)
        assert await raw.exists(key) == 1
        assert not waiter.done()
    await asyncio.wait_for(waiter, 2.0)
    assert await raw.exists(key) == 0


async def test_a_lease_whose_holder_vanished_lapses_after_its_ttl(
    replicas: tuple[RedisCoordinator, RedisCoordinator], raw: redis.asyncio.Redis
) -> None:
    """A holder killed with -9 renews nothing: its lease is free once its TTL has passed."""
    one, _ = replicas
    await raw.set(one.leases.key("rollback:job:1"), "a-dead-holder", px=400)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(_enter(one, "rollback:job:1"), 3.0)
    assert asyncio.get_running_loop().time() - started >= 0.3


async def test_an_error_in_the_work_under_a_lease_comes_out_unchanged_and_frees_it(
    replicas: tuple[RedisCoordinator, RedisCoordinator], raw: redis.asyncio.Redis
) -> None:
    one, _ = replicas
    with pytest.raises(KeyError, match="boom"):
        async with one.leases.hold("rollback:job:1"):
            raise KeyError("boom")
    assert await raw.exists(one.leases.key("rollback:job:1")) == 0


async def test_a_lease_on_an_unreachable_redis_raises_store_unavailable(
    down: RedisCoordinator,
) -> None:
    with pytest.raises(StoreUnavailable, match="lease rollback:job:1"):
        async with down.leases.hold("rollback:job:1"):
            raise AssertionError("the work must not run without its lease")


async def _enter(coordinator: RedisCoordinator, name: str) -> None:
    async with coordinator.leases.hold(name):
        pass
