"""gateway.breaker: breakers around real awaits, on a manual clock (nothing sleeps).

Each test is one of DESIGN.md §6's points, or one of pybreaker 1.4's gaps that the shell closes
(the `TestPybreakerGaps` class shows each gap in pybreaker itself, so a pybreaker release that
fixes one makes its test fail and tells us to look again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pybreaker
import pytest

from gateway.breaker import (
    BreakerListener,
    BreakerRegistry,
    BreakerStore,
    Call,
    MemoryBreakerStore,
    Outcome,
    counts_as_failure,
)
from gateway.core.breaker import Breaker, BreakerConfig, BreakerState, Rejected
from gateway.errors import (
    BadRequest,
    CircuitOpenError,
    StoreError,
    StoreUnavailable,
    UpstreamError,
    UpstreamUnavailable,
)

CFG = BreakerConfig(
    window_seconds=10,
    minimum_calls=4,
    failure_rate_threshold=0.5,
    slow_call_seconds=5.0,
    slow_call_rate_threshold=0.75,
    open_seconds=15.0,
    half_open_probes=3,
    half_open_successes_to_close=3,
    probe_timeout_seconds=60.0,
)


class ManualClock:
    """Moves only when told to; `sleep` advances it and yields once."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 1000.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


class Recorder(BreakerListener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def before_call(self, name: str) -> None:
        self.events.append(("before_call", name))

    def success(self, name: str, duration: float) -> None:
        self.events.append(("success", name, duration))

    def failure(self, name: str, duration: float, exc: BaseException | None) -> None:
        self.events.append(("failure", name, duration, type(exc).__name__ if exc else None))

    def rejected(self, name: str, rejection: Rejected) -> None:
        self.events.append(("rejected", name, rejection.state.value))

    def state_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        self.events.append(("state_change", name, old.value, new.value))

    def store_error(self, name: str, exc: StoreError) -> None:
        self.events.append(("store_error", name, str(exc)))

    def changes(self) -> list[tuple[str, str]]:
        return [(e[2], e[3]) for e in self.events if e[0] == "state_change"]


def registry(clock: ManualClock, **kwargs: Any) -> BreakerRegistry:
    return BreakerRegistry(CFG, clock=clock, **kwargs)


async def fail_upstream() -> None:
    await asyncio.sleep(0)
    raise UpstreamUnavailable("connection refused")


async def trip(reg: BreakerRegistry, name: str = "graph") -> None:
    for _ in range(CFG.minimum_calls):
        with pytest.raises(UpstreamUnavailable):
            async with reg.guard(name):
                await fail_upstream()


async def state_of(reg: BreakerRegistry, name: str = "graph") -> str:
    return str((await reg.snapshot())[name]["state"])


class TestHalfOpenProbes:
    async def test_fifty_waiting_callers_send_exactly_half_open_probes_calls(self) -> None:
        """The rest fail fast with CircuitOpenError, and the probes' success closes it."""
        clock = ManualClock()
        reg = registry(clock)
        await trip(reg)
        clock.advance(CFG.open_seconds)
        release = asyncio.Event()
        reached: list[int] = []
        refused: list[CircuitOpenError] = []

        async def caller(n: int) -> None:
            try:
                async with reg.guard("graph"):
                    reached.append(n)
                    await release.wait()
            except CircuitOpenError as exc:
                refused.append(exc)

        async with asyncio.TaskGroup() as tg:
            for n in range(50):
                _ = tg.create_task(caller(n))
            for _ in range(10):  # let every caller arrive while the probes are held
                await asyncio.sleep(0)
            assert len(reached) + len(refused) == 50
            assert len(reached) == CFG.half_open_probes
            release.set()

        assert len(refused) == 50 - CFG.half_open_probes
        assert {(e.retry_after, e.status, e.reason) for e in refused} == {
            (1.0, 503, "circuit_open")
        }
        assert await state_of(reg) == "closed"

    async def test_a_probe_failure_reopens_and_later_callers_are_refused(self) -> None:
        clock = ManualClock()
        reg = registry(clock)
        await trip(reg)
        clock.advance(CFG.open_seconds)
        with pytest.raises(UpstreamUnavailable):
            async with reg.guard("graph"):
                await fail_upstream()
        with pytest.raises(CircuitOpenError) as refused:
            async with reg.guard("graph"):
                pytest.fail("an open circuit ran the call")
        assert refused.value.retry_after == CFG.open_seconds

    async def test_a_cancelled_probe_frees_its_slot_and_counts_nothing(self) -> None:
        clock = ManualClock()
        reg = registry(clock)
        await trip(reg)
        clock.advance(CFG.open_seconds)
        inside = asyncio.Event()

        async def hangs() -> None:
            async with reg.guard("graph"):
                inside.set()
                await asyncio.Event().wait()

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(hangs())
            await inside.wait()
            assert (await reg.snapshot())["graph"]["probes_in_flight"] == 1
            task.cancel()
        assert task.cancelled()
        view = (await reg.snapshot())["graph"]
        assert (view["state"], view["probes_in_flight"]) == ("half-open", 0)


class TestConcurrency:
    async def test_calls_are_not_serialised_two_slow_calls_overlap(self) -> None:
        """Both are inside the guarded block at once: with a lock around calls (pybreaker's
        `call`) the second could not enter and this would time out."""
        clock = ManualClock()
        reg = registry(clock)
        inside: list[int] = []
        both_inside, answered = asyncio.Event(), asyncio.Event()

        async def slow_call(n: int) -> None:
            async with reg.guard("graph"):
                inside.append(n)
                if len(inside) == 2:
                    both_inside.set()
                await answered.wait()

        async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
            for n in range(2):
                _ = tg.create_task(slow_call(n))
            await both_inside.wait()
            clock.advance(CFG.slow_call_seconds)  # Graph takes its time with both
            answered.set()
        view = (await reg.snapshot())["graph"]
        assert (view["calls"], view["slow_calls"], view["failures"]) == (2, 2, 0)


class TestOutcomes:
    async def test_an_exception_raised_by_awaited_code_is_a_failure(self) -> None:
        clock = ManualClock()
        reg = registry(clock)
        await trip(reg)
        assert await state_of(reg) == "open"
        with pytest.raises(CircuitOpenError) as refused:
            async with reg.guard("graph"):
                pytest.fail("an open circuit ran the call")
        assert refused.value.retry_after == CFG.open_seconds

    async def test_marks_win_over_the_blocks_exit(self) -> None:
        clock = ManualClock()
        reg = registry(clock)
        async with reg.guard("graph") as call:
            call.failed()  # a 5xx answer: no exception, still a failure

        async def judged_then_raises() -> None:
            async with reg.guard("graph") as call:
                call.succeeded()
                raise UpstreamError("raised after the answer was judged")

        with pytest.raises(UpstreamError):
            await judged_then_raises()
        async with reg.guard("graph") as call:
            call.ignored()  # a throttle says nothing about Graph's health
        view = (await reg.snapshot())["graph"]
        assert (view["calls"], view["failures"]) == (2, 1)

    async def test_the_callers_own_errors_and_cancellation_are_not_failures(self) -> None:
        clock = ManualClock()
        reg = registry(clock)
        with pytest.raises(BadRequest):
            async with reg.guard("graph"):
                raise BadRequest("no such field")
        assert (await reg.snapshot())["graph"]["calls"] == 0
        assert counts_as_failure(UpstreamUnavailable("x"))
        assert not counts_as_failure(CircuitOpenError("another breaker refused"))
        assert not counts_as_failure(asyncio.CancelledError())

    async def test_is_failure_decides_for_unmarked_exceptions(self) -> None:
        clock = ManualClock()
        reg = registry(clock, is_failure=lambda exc: isinstance(exc, KeyError))
        for exc in (KeyError("k"), ValueError("v")):
            with pytest.raises(type(exc)):
                async with reg.guard("graph"):
                    raise exc
        view = (await reg.snapshot())["graph"]
        assert (view["calls"], view["failures"]) == (1, 1)

    async def test_the_duration_comes_from_the_injected_clock(self) -> None:
        clock = ManualClock()
        rec = Recorder()
        reg = registry(clock, listeners=[rec])
        async with reg.guard("graph") as call:
            assert isinstance(call, Call)
            assert call.probe is False
            clock.advance(2.5)
        assert rec.events == [("before_call", "graph"), ("success", "graph", 2.5)]


class TestListeners:
    async def test_listeners_see_every_transition_and_outcome(self) -> None:
        clock = ManualClock()
        rec = Recorder()
        reg = registry(clock, listeners=[rec])
        await trip(reg)
        with pytest.raises(CircuitOpenError):
            async with reg.guard("graph"):
                pass
        clock.advance(CFG.open_seconds)
        with pytest.raises(UpstreamUnavailable):
            async with reg.guard("graph"):
                await fail_upstream()
        clock.advance(CFG.open_seconds)
        for _ in range(CFG.half_open_successes_to_close):
            async with reg.guard("graph"):
                pass
        assert rec.changes() == [
            ("closed", "open"),
            ("open", "half-open"),
            ("half-open", "open"),
            ("open", "half-open"),
            ("half-open", "closed"),
        ]
        assert rec.events[:2] == [
            ("before_call", "graph"),
            ("failure", "graph", 0.0, "UpstreamUnavailable"),
        ]
        assert ("rejected", "graph", "open") in rec.events
        assert sum(e[0] == "success" for e in rec.events) == 3

    async def test_a_listener_can_be_added_and_removed(self) -> None:
        clock = ManualClock()
        rec = Recorder()
        reg = registry(clock)
        reg.add_listener(rec)
        async with reg.guard("graph"):
            pass
        reg.remove_listener(rec)
        async with reg.guard("graph"):
            pass
        assert len(rec.events) == 2

    def test_the_base_listener_ignores_everything(self) -> None:
        base = BreakerListener()
        base.before_call("g")
        base.success("g", 1.0)
        base.failure("g", 1.0, None)
        base.rejected("g", Rejected(1.0, BreakerState.OPEN))
        base.state_change("g", BreakerState.CLOSED, BreakerState.OPEN)
        base.store_error("g", StoreUnavailable("down"))


class TestAdmin:
    async def test_forced_open_disabled_and_reset(self) -> None:
        clock = ManualClock()
        rec = Recorder()
        reg = registry(clock, listeners=[rec])
        await reg.force("graph", "open")
        with pytest.raises(CircuitOpenError) as refused:
            async with reg.guard("graph"):
                pass
        assert refused.value.retry_after == CFG.open_seconds
        await reg.force("graph", "disable")
        await trip(reg)  # failures count for nothing while disabled
        assert await state_of(reg) == "disabled"
        after = await reg.force("graph", "reset")
        assert after.state is BreakerState.CLOSED
        assert rec.changes() == [
            ("closed", "forced-open"),
            ("forced-open", "disabled"),
            ("disabled", "closed"),
        ]

    async def test_the_snapshot_lists_every_breaker_by_name(self) -> None:
        clock = ManualClock()
        reg = registry(clock)
        await trip(reg, "act_1")
        async with reg.guard("graph"):
            pass
        snap = await reg.snapshot()
        assert sorted(snap) == ["act_1", "graph"]
        assert snap["act_1"]["state"] == "open"
        assert snap["act_1"]["retry_after_seconds"] == CFG.open_seconds
        assert snap["graph"]["calls"] == 1

    async def test_per_name_overrides_and_a_policy_reload(self) -> None:
        clock = ManualClock()
        reg = registry(clock, overrides={"act_1": replace(CFG, minimum_calls=1)})
        with pytest.raises(UpstreamUnavailable):
            async with reg.guard("act_1"):
                await fail_upstream()
        assert await state_of(reg, "act_1") == "open"
        reg.configure(replace(CFG, open_seconds=1.0))
        assert reg.config_for("act_1") == reg.config_for("graph") == replace(CFG, open_seconds=1)
        clock.advance(1.0)
        async with reg.guard("act_1") as call:  # the new open_seconds applies at once
            assert call.probe


class FlakyStore:
    """A store that is down when told to be (as a Redis store is when Redis is)."""

    def __init__(self) -> None:
        self.inner = MemoryBreakerStore()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("redis: connection refused")

    async def apply(
        self, name: str, config: BreakerConfig, step: Callable[[Breaker], tuple[Breaker, Any]]
    ) -> tuple[Breaker, Breaker, Any]:
        self._check()
        return await self.inner.apply(name, config, step)

    async def load(self, name: str, config: BreakerConfig) -> Breaker:
        return await self.inner.load(name, config)

    async def names(self) -> list[str]:
        self._check()
        return await self.inner.names()


class RetryingStore(MemoryBreakerStore):
    """Runs each step twice and keeps the second run, as a CAS loop does after a conflict."""

    async def apply(
        self, name: str, config: BreakerConfig, step: Callable[[Breaker], tuple[Breaker, Any]]
    ) -> tuple[Breaker, Breaker, Any]:
        step(await self.load(name, config))  # the losing run: thrown away
        return await super().apply(name, config, step)


class TestStore:
    async def test_a_store_error_is_never_taken_for_closed(self) -> None:
        """Without a fallback the call is not made: pybreaker would say "closed" and send."""
        clock = ManualClock()
        store = FlakyStore()
        reg = registry(clock, store=store)
        store.down = True
        with pytest.raises(StoreUnavailable):
            async with reg.guard("graph"):
                pytest.fail("sent while the breaker's state was unknown")

    async def test_with_a_fallback_the_process_keeps_its_own_breaker(self) -> None:
        clock = ManualClock()
        store = FlakyStore()
        rec = Recorder()
        reg = registry(clock, store=store, fallback=MemoryBreakerStore(), listeners=[rec])
        async with reg.guard("graph"):
            pass
        store.down = True
        await trip(reg)
        with pytest.raises(CircuitOpenError):
            async with reg.guard("graph"):
                pass
        assert ("store_error", "graph", "redis: connection refused") in rec.events
        assert (await reg.snapshot())["graph"]["state"] == "open"  # the fallback's view
        store.down = False
        assert (await reg.snapshot())["graph"]["state"] == "closed"  # the shared one's

    async def test_without_a_fallback_the_snapshot_fails_loudly(self) -> None:
        store = FlakyStore()
        store.down = True
        with pytest.raises(StoreUnavailable):
            await registry(ManualClock(), store=store).snapshot()

    async def test_an_outcome_the_store_cannot_take_never_hides_the_calls_answer(self) -> None:
        clock = ManualClock()
        store = FlakyStore()
        rec = Recorder()
        reg = registry(clock, store=store, listeners=[rec])
        async with reg.guard("graph"):
            store.down = True  # Redis goes away while Graph answers
            answer = "created 12345"
        assert answer == "created 12345"
        assert rec.events[-2:] == [
            ("success", "graph", 0.0),
            ("store_error", "graph", "redis: connection refused"),
        ]

    async def test_steps_are_pure_so_a_retrying_store_counts_each_call_once(self) -> None:
        clock = ManualClock()
        reg = registry(clock, store=RetryingStore())
        await trip(reg)
        clock.advance(CFG.open_seconds)
        for _ in range(CFG.half_open_probes):
            async with reg.guard("graph") as call:
                assert call.probe
        snap = await reg.snapshot()
        assert snap["graph"]["state"] == "closed"  # 3 probes, 3 successes, no double counts

    async def test_a_stored_breaker_takes_the_current_config(self) -> None:
        store = MemoryBreakerStore()
        await store.apply("graph", CFG, lambda b: (b, None))
        wider = replace(CFG, window_seconds=60)
        assert (await store.load("graph", wider)).config == wider
        protocol_check: BreakerStore = store
        assert await protocol_check.names() == ["graph"]

    def test_outcomes_have_stable_names(self) -> None:
        assert [o.value for o in Outcome] == ["success", "failure", "ignored"]


class TestPybreakerGaps:
    """pybreaker 1.4 itself, showing each gap this module closes."""

    def test_our_state_names_are_pybreakers(self) -> None:
        assert BreakerState.CLOSED == pybreaker.STATE_CLOSED
        assert BreakerState.OPEN == pybreaker.STATE_OPEN
        assert BreakerState.HALF_OPEN == pybreaker.STATE_HALF_OPEN

    def test_listener_hooks_keep_pybreakers_names(self) -> None:
        ours = {n for n in vars(BreakerListener) if not n.startswith("_")}
        theirs = {n for n in vars(pybreaker.CircuitBreakerListener) if not n.startswith("_")}
        assert theirs <= ours

    async def test_pybreaker_decorating_an_async_def_never_counts_its_failures(self) -> None:
        breaker = pybreaker.CircuitBreaker(fail_max=2)

        @breaker
        async def call() -> None:
            await fail_upstream()

        for _ in range(5):
            with pytest.raises(UpstreamUnavailable):
                await call()
        assert (breaker.current_state, breaker.fail_counter) == ("closed", 0)

    async def test_pybreaker_calling_admits_every_waiting_caller_when_half_open(self) -> None:
        breaker = pybreaker.CircuitBreaker(fail_max=1)
        breaker.half_open()
        release = asyncio.Event()
        reached = 0

        async def caller() -> None:
            nonlocal reached
            with breaker.calling():
                reached += 1
                await release.wait()

        async with asyncio.TaskGroup() as tg:
            for _ in range(50):
                _ = tg.create_task(caller())
            for _ in range(10):
                await asyncio.sleep(0)
            release.set()
        assert reached == 50  # ours admits half_open_probes (3): see TestHalfOpenProbes


class Delegating:
    """A store that is not MemoryBreakerStore itself: every step goes through `apply`."""

    def __init__(self) -> None:
        self.inner = MemoryBreakerStore()
        self.applied = 0

    async def apply(
        self, name: str, config: BreakerConfig, step: Callable[[Breaker], tuple[Breaker, Any]]
    ) -> tuple[Breaker, Breaker, Any]:
        self.applied += 1
        return await self.inner.apply(name, config, step)

    async def load(self, name: str, config: BreakerConfig) -> Breaker:
        return await self.inner.load(name, config)

    async def names(self) -> list[str]:
        return await self.inner.names()


class TestInProcessPath:
    """MemoryBreakerStore's steps run without a coroutine; nothing else differs."""

    @staticmethod
    async def story(reg: BreakerRegistry, clock: ManualClock) -> list[Any]:
        """Successes, a slow call, a trip, rejections, probes (one cancelled, one failed),
        then a close; the snapshot after each act."""
        seen: list[Any] = []
        for _ in range(3):
            async with reg.guard("graph"):
                clock.advance(0.25)
        async with reg.guard("graph") as call:
            clock.advance(6.0)  # slow
            call.succeeded()
        seen.append(await reg.snapshot())
        await trip(reg)
        with pytest.raises(CircuitOpenError):
            async with reg.guard("graph"):
                pass
        seen.append(await reg.snapshot())
        clock.advance(CFG.open_seconds)
        with pytest.raises(asyncio.CancelledError):
            async with reg.guard("graph"):
                raise asyncio.CancelledError
        async with reg.guard("graph") as call:
            call.failed()
        seen.append(await reg.snapshot())
        clock.advance(CFG.open_seconds)
        for _ in range(CFG.half_open_successes_to_close):
            async with reg.guard("graph") as call:
                pass
        seen.append(await reg.snapshot())
        return seen

    async def test_the_in_process_store_and_an_awaited_one_tell_the_same_story(self) -> None:
        results = []
        for store in (MemoryBreakerStore(), Delegating()):
            clock, rec = ManualClock(), Recorder()
            reg = registry(clock, store=store, listeners=[rec])
            results.append((await self.story(reg, clock), rec.events))
        assert results[0] == results[1]
        assert results[0][0][-1]["graph"]["state"] == "closed"

    async def test_a_store_that_is_not_memorys_own_sees_every_step(self) -> None:
        store = Delegating()
        reg = registry(ManualClock(), store=store)
        async with reg.guard("graph"):
            pass
        assert store.applied == 2  # admit and record
