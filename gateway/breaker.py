"""Circuit breakers around calls to Graph: the asyncio shell over gateway.core.breaker.

    registry = BreakerRegistry(policy.breaker, clock=clock)
    async with registry.guard("graph") as call:     # CircuitOpenError if refused: nothing sent
        response = await send(...)                   # one upstream attempt
        if response.status >= 500:
            call.failed()                            # else: no exception = success,
                                                     # an exception = is_failure(exc)

Guard one upstream attempt, not a whole request with its retries: the breaker judges Graph,
and a retry loop that meets an open circuit should stop (CircuitOpenError is transient).

The rules live in gateway.core.breaker; this module reads the clock, times the call and applies
the pure transitions through a `BreakerStore`, whose one method applies one transition
atomically. `MemoryBreakerStore` does it with no `await` between read and write (atomic within
the event loop); a Redis store will run the same pure step in a WATCH/MULTI/EXEC loop or a
script, so every replica shares one state. No lock is held while the protected call runs.

What is reused from pybreaker 1.4 (the chosen library), and what is not:

- reused: its state names (BreakerState's `closed`, `open`, `half-open` are its `STATE_*`
  values; a test pins them), its listener interface (`BreakerListener` has the hooks of
  `CircuitBreakerListener`: `before_call`, `success`, `failure`, `state_change`, as no-op
  methods to override, with the breaker's name where pybreaker passes the CircuitBreaker), its
  `success_threshold` (our half_open_successes_to_close) and its `exclude` idea (`is_failure`:
  an exception that is not a failure does not count against Graph).
- not reused: its CircuitBreaker, state objects and storages, because each carries one of the
  gaps below; counting them through pybreaker would mean overriding nearly all of it.

pybreaker's gaps (seen in its 1.4 source and tried in tests/unit/test_breaker_shell.py), and how
this module closes each:

1. Its async path needs Tornado: here `guard()` is a native `async with`.
2. Decorating an `async def` never counts its failures (the wrapper "succeeds" as soon as the
   coroutine object exists): here the outcome is taken in `__aexit__`, after the awaited work,
   so an exception raised by awaited code is counted.
3. It holds a lock around each protected call, serialising them: here the state is touched
   only in admit and record, each one atomic transition; calls run concurrently.
4. `with breaker.calling():` around an `await` admits every waiting caller when half-open: here
   the state counts probes in flight, so at most half_open_probes calls are admitted and every
   other caller gets CircuitOpenError at once, with a retry_after.
5. Its Redis storage is read-then-write (counters and state set by separate commands): here the
   store applies one pure transition to the whole state atomically.
6. It treats a Redis error as "closed": here a store error is never turned into a state.
   Admission either fails (StoreError, so nothing is sent) or, when a `fallback` store is
   configured, runs on the fallback (a process-local breaker keeps protecting Graph while the
   shared store is down); an outcome the store cannot take is dropped and reported to the
   listeners' `store_error`, so a stored breaker never blames Graph for its own outage.

Beyond pybreaker (Resilience4j's model): a failure rate and a slow-call rate over a sliding
time window with a minimum volume, instead of a count of consecutive failures; FORCED_OPEN and
DISABLED for the admin API (`force`); `snapshot()` for the admin API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, TypeVar

from gateway.clock import Clock
from gateway.core.breaker import (
    Admission,
    Admitted,
    Breaker,
    BreakerConfig,
    BreakerState,
    ForceMode,
    Rejected,
    admit,
    describe,
    force,
    record,
    release,
)
from gateway.errors import CircuitOpenError, RequestRejected, StoreError

R = TypeVar("R")
Step = Callable[[Breaker], tuple[Breaker, R]]


class BreakerStore(Protocol):
    """Where breakers live: one process (memory) or shared by replicas (Redis)."""

    async def apply(
        self, name: str, config: BreakerConfig, step: Callable[[Breaker], tuple[Breaker, R]]
    ) -> tuple[Breaker, Breaker, R]:
        """Atomically: read *name*'s breaker (a fresh CLOSED one if none is stored) under
        *config*, compute `step(breaker) -> (new breaker, result)`, store the new breaker, and
        return (before, after, result). Nothing else changes the breaker between the read and
        the write. *step* is pure and may be run more than once (a CAS loop retries it); only
        the run whose write succeeded is returned. Raises StoreError if the store is down."""
        ...

    async def load(self, name: str, config: BreakerConfig) -> Breaker:
        """*name*'s breaker under *config* (a fresh CLOSED one if none is stored)."""
        ...

    async def names(self) -> list[str]:
        """Every stored breaker's name."""
        ...


class MemoryBreakerStore:
    """Breakers of one process. Atomic because `apply` never awaits."""

    def __init__(self) -> None:
        self._breakers: dict[str, Breaker] = {}

    async def apply(
        self, name: str, config: BreakerConfig, step: Callable[[Breaker], tuple[Breaker, R]]
    ) -> tuple[Breaker, Breaker, R]:
        return self.apply_now(name, config, step)

    def apply_now(
        self, name: str, config: BreakerConfig, step: Callable[[Breaker], tuple[Breaker, R]]
    ) -> tuple[Breaker, Breaker, R]:
        """`apply` as a plain call: this store never waits, so the registry calls it without
        a coroutine on every guarded call (the same single step, the same atomicity)."""
        before = self._read(name, config)
        after, result = step(before)
        self._breakers[name] = after
        return before, after, result

    async def load(self, name: str, config: BreakerConfig) -> Breaker:
        return self._read(name, config)

    async def names(self) -> list[str]:
        return sorted(self._breakers)

    def _read(self, name: str, config: BreakerConfig) -> Breaker:
        stored = self._breakers.get(name)
        if stored is None:
            return Breaker(config)
        if stored.config is not config and stored.config != config:
            stored = replace(stored, config=config)
        return stored


def _in_process(store: BreakerStore) -> MemoryBreakerStore | None:
    """*store* when its `apply` is MemoryBreakerStore's own (a subclass that overrides it,
    as tests do, keeps the awaited path)."""
    return store if type(store) is MemoryBreakerStore else None


class BreakerListener:
    """Hooks called on breaker events (pybreaker's CircuitBreakerListener, by name). Override
    the ones you need; they run synchronously in the caller's task and must not block."""

    def before_call(self, name: str) -> None:
        """A call was admitted and is about to run."""

    def success(self, name: str, duration: float) -> None:
        """An admitted call ended well."""

    def failure(self, name: str, duration: float, exc: BaseException | None) -> None:
        """An admitted call failed (*exc* is None when the caller said so with `failed()`)."""

    def rejected(self, name: str, rejection: Rejected) -> None:
        """A call was refused without being made."""

    def state_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        """This process moved the breaker from *old* to *new*."""

    def store_error(self, name: str, exc: StoreError) -> None:
        """The store failed: admission used the fallback, or an outcome was dropped."""


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"  # no verdict on Graph (cancelled, throttled): counted as nothing


def counts_as_failure(exc: BaseException) -> bool:
    """The default `is_failure` for an exception leaving a guarded block unmarked: any
    Exception except a refusal of the caller's own request or another breaker's refusal.
    Cancellation (a BaseException) is no verdict on Graph."""
    return isinstance(exc, Exception) and not isinstance(exc, RequestRejected | CircuitOpenError)


class Call:
    """One admitted call. Mark its outcome, or let the block's exit decide."""

    __slots__ = ("_store", "epoch", "name", "outcome", "probe", "started")

    def __init__(self, name: str, admitted: Admitted, store: BreakerStore, started: float) -> None:
        self.name = name
        self.probe = admitted.probe
        self.epoch = admitted.epoch
        self.started = started
        self.outcome: Outcome | None = None
        self._store = store

    def succeeded(self) -> None:
        self.outcome = Outcome.SUCCESS

    def failed(self) -> None:
        """Graph failed: a 5xx, a transport error or a transient Graph error."""
        self.outcome = Outcome.FAILURE

    def ignored(self) -> None:
        """No verdict on Graph's health (a throttle, a permanent 4xx): count nothing."""
        self.outcome = Outcome.IGNORED


class BreakerRegistry:
    """Named breakers ("graph" for the upstream; later one per ad account)."""

    def __init__(
        self,
        config: BreakerConfig,
        *,
        clock: Clock,
        store: BreakerStore | None = None,
        fallback: BreakerStore | None = None,
        overrides: Mapping[str, BreakerConfig] | None = None,
        listeners: Iterable[BreakerListener] = (),
        is_failure: Callable[[BaseException], bool] = counts_as_failure,
    ) -> None:
        self._clock = clock
        self._store: BreakerStore = store or MemoryBreakerStore()
        self._fallback = fallback
        self._listeners = list(listeners)
        self._is_failure = is_failure
        self.configure(config, overrides)

    def configure(
        self, config: BreakerConfig, overrides: Mapping[str, BreakerConfig] | None = None
    ) -> None:
        """New policy (a reload): applies to every breaker from its next transition."""
        self._config = config
        self._overrides = dict(overrides or {})

    def config_for(self, name: str) -> BreakerConfig:
        return self._overrides.get(name, self._config)

    def add_listener(self, listener: BreakerListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: BreakerListener) -> None:
        self._listeners.remove(listener)

    def guard(self, name: str) -> Guard:
        """`async with registry.guard(name) as call:`; raises CircuitOpenError if refused."""
        return Guard(self, name)

    async def force(self, name: str, mode: ForceMode) -> Breaker:
        """The admin API: "open" (hold open), "disable" (never break) or "reset" (CLOSED)."""
        now = self._clock.now()
        _, after, _ = await self._apply(name, lambda b: (force(b, mode, now), None))
        return after

    async def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every stored breaker, as the admin API shows it."""
        now = self._clock.now()
        try:
            store, names = self._store, await self._store.names()
        except StoreError as exc:
            if self._fallback is None:
                raise
            self._notify_store_error("*", exc)
            store, names = self._fallback, await self._fallback.names()
        return {
            name: describe(await store.load(name, self.config_for(name)), now) for name in names
        }

    async def _apply(self, name: str, step: Step[R]) -> tuple[BreakerStore, Breaker, R]:
        """Apply *step* on the store (or the fallback if the store is down); notify a change."""
        config = self.config_for(name)
        try:
            store = self._store
            before, after, result = await store.apply(name, config, step)
        except StoreError as exc:
            if self._fallback is None:
                raise
            self._notify_store_error(name, exc)
            store = self._fallback
            before, after, result = await store.apply(name, config, step)
        self._notify_change(name, before, after)
        return store, after, result

    def _admit(self, name: str, now: float) -> tuple[BreakerStore, Admission] | None:
        """Admission on an in-process store, without awaiting; None for another store."""
        store = _in_process(self._store)
        if store is None:
            return None
        before, after, decision = store.apply_now(
            name, self.config_for(name), lambda b: admit(b, now)
        )
        if before.state is not after.state:
            self._notify_change(name, before, after)
        return store, decision

    async def _finish(self, call: Call, outcome: Outcome, exc: BaseException | None) -> None:
        step = self._outcome_step(call, outcome, exc)
        try:
            before, after, _ = await call._store.apply(call.name, self.config_for(call.name), step)
        except StoreError as store_exc:
            # Never raise here: the call itself is done, and its answer (maybe a created
            # entity) must reach the caller.
            self._notify_store_error(call.name, store_exc)
            return
        self._notify_change(call.name, before, after)

    def _outcome_step(self, call: Call, outcome: Outcome, exc: BaseException | None) -> Step[None]:
        """The step that records *call*'s outcome (the listeners hear of it here)."""
        duration = self._clock.monotonic() - call.started
        now = self._clock.now()
        if outcome is Outcome.IGNORED:

            def step(b: Breaker) -> tuple[Breaker, None]:
                return release(b, now=now, probe=call.probe, epoch=call.epoch), None
        else:
            success = outcome is Outcome.SUCCESS

            def step(b: Breaker) -> tuple[Breaker, None]:
                after = record(
                    b,
                    success=success,
                    duration=duration,
                    now=now,
                    probe=call.probe,
                    epoch=call.epoch,
                )
                return after, None

        for listener in self._listeners:
            if outcome is Outcome.SUCCESS:
                listener.success(call.name, duration)
            elif outcome is Outcome.FAILURE:
                listener.failure(call.name, duration, exc)
        return step

    def _notify_change(self, name: str, before: Breaker, after: Breaker) -> None:
        if before.state is not after.state:
            for listener in self._listeners:
                listener.state_change(name, before.state, after.state)

    def _notify_store_error(self, name: str, exc: StoreError) -> None:
        for listener in self._listeners:
            listener.store_error(name, exc)


class Guard:
    """The async context manager `BreakerRegistry.guard()` returns (one use)."""

    __slots__ = ("_call", "_name", "_registry")

    def __init__(self, registry: BreakerRegistry, name: str) -> None:
        self._registry = registry
        self._name = name
        self._call: Call | None = None

    async def __aenter__(self) -> Call:
        registry, name = self._registry, self._name
        now = registry._clock.now()
        admitted = registry._admit(name, now)
        if admitted is not None:
            store, decision = admitted
        else:
            store, _, decision = await registry._apply(name, lambda b: admit(b, now))
        if isinstance(decision, Rejected):
            for listener in registry._listeners:
                listener.rejected(name, decision)
            raise CircuitOpenError(
                f"Circuit breaker {name!r} is {decision.state}: the call was not made",
                retry_after=decision.retry_after_seconds,
            )
        for listener in registry._listeners:
            listener.before_call(name)
        self._call = Call(name, decision, store, registry._clock.monotonic())
        return self._call

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        call = self._call
        if call is None:  # not entered (or exited already): no call to account for
            return
        self._call = None
        registry = self._registry
        outcome = call.outcome
        if outcome is None:
            if exc is None:
                outcome = Outcome.SUCCESS
            elif registry._is_failure(exc):
                outcome = Outcome.FAILURE
            else:
                outcome = Outcome.IGNORED
        store = _in_process(call._store)
        if store is None:
            await registry._finish(call, outcome, exc)
            return
        step = registry._outcome_step(call, outcome, exc)
        before, after, _ = store.apply_now(call.name, registry.config_for(call.name), step)
        registry._notify_change(call.name, before, after)
