"""Redis-backed stores for the state every replica of the gateway must share.

Shared through one Redis, so that N gateway processes act as one towards Graph:

- circuit breakers (`BreakerStore`): one replica's failures open the circuit for all, and
  half-open admits at most `half_open_probes` probes across all of them;
- throttle gates (`GateStore`): a throttle one replica meets holds every replica's calls;
- the retry budget (`BudgetStore`): one allowance of retries, not one per replica.

Why WATCH/MULTI/EXEC: the rules are the pure Python steps of gateway.core (`admit`, `record`,
`try_admit`, `try_retry`, ...). A Lua script would need those rules written a second time, in a
second language. Optimistic concurrency keeps them in one place: WATCH the keys, read them,
run the step in Python, and commit the new states in MULTI/EXEC, which Redis refuses if a
watched key changed since the WATCH; then the read and the step are run again (the protocols
allow a step to run more than once). Contention is low (one key per breaker, a few per gate,
one for the budget), so a retry is rare. A loser waits a random while (full jitter) and
retries behind the other losers of its process on the same keys, so that only replicas
compete; `max_attempts` conflicts in a row raise StoreConflict.
A step that changes nothing commits nothing: the MGET read every key at one instant.

Errors are translated here and nowhere else; a Redis error is never read as a state:

    redis.exceptions.RedisError, OSError, TimeoutError   -> StoreUnavailable
    max_attempts WatchErrors in a row                    -> StoreConflict

A timeout after EXEC was sent can hide a write that did happen (a breaker probe then stays
counted until `probe_timeout_seconds`); that is the price of any remote store.

Keys (`prefix` defaults to "gateway:"), each holding the state's `to_dict()` as JSON:

    {prefix}breaker:{name}   no TTL: a breaker forced open by the admin API must not expire
    {prefix}gate:{key}       TTL `gate_ttl_seconds` from the last write; GateState() is deleted
    {prefix}budget           TTL `budget_windows` windows from the last write
    {prefix}lease:{name}     see gateway.stores.redis_lease (a token, renewed while held)
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from weakref import WeakValueDictionary

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError, WatchError

from gateway.clock import Clock, SystemClock
from gateway.core.breaker import Breaker, BreakerConfig
from gateway.core.ratelimit import GateState
from gateway.core.retry import BudgetState
from gateway.errors import ConfigError, StoreConflict, StoreUnavailable
from gateway.stores.closing import AsyncClosing
from gateway.stores.redis_lease import RedisLeases

__all__ = ["RedisBreakerStore", "RedisBudgetStore", "RedisCoordinator", "RedisGateStore"]

R = TypeVar("R")
# What one attempt commits: key -> (JSON, TTL seconds or None) to SET, or None to DEL.
Writes = dict[str, tuple[str, int | None] | None]
Raw = bytes | str  # what GET returns: bytes here (the client does not decode)
Step = Callable[[list[Raw | None]], tuple[Writes, R]]

DEFAULT_PREFIX = "gateway:"
MAX_ATTEMPTS = 50
_BACKOFF_BASE_SECONDS = 0.001
_BACKOFF_CAP_SECONDS = 0.05
_SCAN_BATCH = 500


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Re-raise a Redis or network error as StoreUnavailable (a WatchError passes through)."""
    try:
        yield
    except WatchError:
        raise
    except (RedisError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"Redis unavailable ({what}): {type(exc).__name__}: {exc}") from exc


def _encode(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def _glob_escape(text: str) -> str:
    """*text* as a literal in a SCAN MATCH pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class _Cas:
    """The optimistic WATCH/MULTI/EXEC loop every store runs its steps through."""

    def __init__(self, client: Redis, max_attempts: int, clock: Clock) -> None:
        self.client = client
        self._max_attempts = max_attempts
        self._clock = clock
        self._retrying: WeakValueDictionary[tuple[str, ...], asyncio.Lock] = WeakValueDictionary()

    async def run(self, keys: Sequence[str], step: Step[R]) -> R:
        """Read *keys*, run `step(values) -> (writes, result)`, commit *writes* atomically."""
        try:
            return await self._try(keys, step)
        except WatchError:
            pass
        # A watched key changed under us: read and step again. This process's losers on the
        # same keys would only collide with each other again, so they retry one at a time
        # (then only other replicas compete), each after a random pause (full jitter).
        lock = self._retrying.setdefault(tuple(keys), asyncio.Lock())
        async with lock:
            for attempt in range(1, self._max_attempts):
                backoff = min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2**attempt)
                await self._clock.sleep(random.uniform(0, backoff))  # noqa: S311 - jitter
                try:
                    return await self._try(keys, step)
                except WatchError:
                    continue
        raise StoreConflict(
            f"Redis: {self._max_attempts} conflicting writes in a row on {list(keys)!r}"
        )

    async def _try(self, keys: Sequence[str], step: Step[R]) -> R:
        with _translated(f"transaction on {keys[0]!r}"):
            return await self._attempt(keys, step)

    async def _attempt(self, keys: Sequence[str], step: Step[R]) -> R:
        async with self.client.pipeline(transaction=True) as pipe:
            await pipe.watch(*keys)
            values: list[Raw | None] = await pipe.mget(keys)
            writes, result = step(values)
            if writes:
                pipe.multi()  # type: ignore[no-untyped-call]
                # Queued until EXEC: each call returns the pipeline, nothing to await.
                if deletes := [key for key, write in writes.items() if write is None]:
                    _ = pipe.delete(*deletes)
                for key, write in writes.items():
                    if write is not None:
                        _ = pipe.set(key, write[0], ex=write[1])
                await pipe.execute()  # WatchError if a watched key changed
            return result

    async def scan(self, prefix: str) -> list[str]:
        """Every key starting with *prefix*, without it."""
        with _translated(f"scan {prefix!r}*"):
            found = {
                key.decode()
                async for key in self.client.scan_iter(
                    match=_glob_escape(prefix) + "*", count=_SCAN_BATCH
                )
            }
        return sorted(key[len(prefix) :] for key in found)


class RedisBreakerStore:
    """`BreakerStore` over Redis: one JSON value per breaker."""

    def __init__(self, cas: _Cas, prefix: str) -> None:
        self._cas = cas
        self._prefix = f"{prefix}breaker:"

    async def apply(
        self, name: str, config: BreakerConfig, step: Callable[[Breaker], tuple[Breaker, R]]
    ) -> tuple[Breaker, Breaker, R]:
        key = self._prefix + name

        def run(values: list[Raw | None]) -> tuple[Writes, tuple[Breaker, Breaker, R]]:
            before = _breaker(values[0], config)
            after, result = step(before)
            doc = after.to_dict()
            # Stored on first use even if unchanged, so that names() lists it (as in memory).
            changed = values[0] is None or doc != before.to_dict()
            writes: Writes = {key: (_encode(doc), None)} if changed else {}
            return writes, (before, after, result)

        return await self._cas.run([key], run)

    async def load(self, name: str, config: BreakerConfig) -> Breaker:
        with _translated(f"get breaker {name!r}"):
            raw: Raw | None = await self._cas.client.get(self._prefix + name)
        return _breaker(raw, config)

    async def names(self) -> list[str]:
        return await self._cas.scan(self._prefix)


def _breaker(raw: Raw | None, config: BreakerConfig) -> Breaker:
    """The stored breaker under *config* (the current policy), or a fresh CLOSED one."""
    return Breaker(config) if raw is None else Breaker.from_dict(json.loads(raw), config)


class RedisGateStore:
    """`GateStore` over Redis: one JSON value per gate, expiring `ttl_seconds` after its last
    write (longer than any block: policy `max_block_seconds` plus a margin)."""

    def __init__(self, cas: _Cas, prefix: str, *, ttl_seconds: int = 7200) -> None:
        self._cas = cas
        self._prefix = f"{prefix}gate:"
        self._ttl = ttl_seconds

    async def apply(
        self,
        keys: Sequence[str],
        fn: Callable[[dict[str, GateState]], tuple[R, dict[str, GateState]]],
    ) -> R:
        names = list(dict.fromkeys(keys))
        if not names:
            return fn({})[0]

        def run(values: list[Raw | None]) -> tuple[Writes, R]:
            stored = dict(zip(names, values, strict=True))
            states = {n: _gate(raw) for n, raw in stored.items()}
            result, new = fn(dict(states))
            writes: Writes = {}
            for name, state in new.items():
                if state == GateState():  # a gate that knows nothing need not be kept
                    if stored.get(name, b"") is not None:
                        writes[self._prefix + name] = None
                elif state != states.get(name):
                    writes[self._prefix + name] = (_encode(state.to_dict()), self._ttl)
            return writes, result

        return await self._cas.run([self._prefix + n for n in names], run)

    async def snapshot(self) -> dict[str, GateState]:
        """Every stored gate. Not one atomic view: SCAN, then MGET in batches."""
        names = await self._cas.scan(self._prefix)
        found: dict[str, GateState] = {}
        for i in range(0, len(names), _SCAN_BATCH):
            batch = names[i : i + _SCAN_BATCH]
            with _translated("snapshot of gates"):
                values = await self._cas.client.mget([self._prefix + n for n in batch])
            found.update((n, _gate(raw)) for n, raw in zip(batch, values, strict=True) if raw)
        return found


def _gate(raw: Raw | None) -> GateState:
    return GateState() if raw is None else GateState.from_dict(json.loads(raw))


class RedisBudgetStore:
    """`BudgetStore` over Redis: one JSON value, expiring `windows` windows after its last
    write (older buckets no longer count)."""

    def __init__(self, cas: _Cas, prefix: str, *, windows: int = 3) -> None:
        self._cas = cas
        self._key = f"{prefix}budget"
        self._windows = windows

    async def apply(
        self, window_seconds: int, fn: Callable[[BudgetState], tuple[BudgetState, R]]
    ) -> R:
        def run(values: list[Raw | None]) -> tuple[Writes, R]:
            raw = values[0]
            before = BudgetState(window_seconds) if raw is None else _budget(raw)
            after, result = fn(before)
            if raw is not None and after == before:
                return {}, result
            ttl = self._windows * max(window_seconds, after.window_seconds)
            return {self._key: (_encode(after.to_dict()), ttl)}, result

        return await self._cas.run([self._key], run)


def _budget(raw: Raw) -> BudgetState:
    return BudgetState.from_dict(json.loads(raw))


class RedisCoordinator(AsyncClosing):
    """The shared stores (breakers, gates, budget) and leases over one Redis client, which
    this object owns and closes."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        gate_ttl_seconds: int = 7200,
        budget_windows: int = 3,
        max_attempts: int = MAX_ATTEMPTS,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        clock = clock or SystemClock()
        cas = _Cas(client, max_attempts, clock)
        self.breakers = RedisBreakerStore(cas, prefix)
        self.gates = RedisGateStore(cas, prefix, ttl_seconds=gate_ttl_seconds)
        self.budget = RedisBudgetStore(cas, prefix, windows=budget_windows)
        self.leases = RedisLeases(client, prefix, clock)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 2.0,
        max_connections: int = 50,
        **options: Any,
    ) -> RedisCoordinator:
        """A coordinator over a new client for *url* (nothing is connected yet); *options* go
        to the constructor. A store that is down must fail fast, not stall every request:
        short socket timeouts and few, quick reconnects. Each transaction holds a connection
        for three round trips, so the pool is bounded and *blocking*: a caller waits up to
        *timeout* for a free connection (redis-py's default pool raises at 100 at once)."""
        try:
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=30,
                retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=2),
            )
        except ValueError as exc:
            raise ConfigError([f"redis: {exc}"]) from exc
        return cls(Redis.from_pool(pool), prefix=prefix, **options)

    async def check(self) -> None:
        """PING Redis (for /readyz); StoreUnavailable if it does not answer."""
        with _translated("ping"):
            await self.client.ping()

    async def aclose(self) -> None:
        await self.client.aclose()


async def open_coordinator(
    url: str, *, prefix: str = DEFAULT_PREFIX, **options: Any
) -> RedisCoordinator:
    """A coordinator for *url* that has answered a PING; StoreUnavailable if unreachable."""
    coordinator = RedisCoordinator.from_url(url, prefix=prefix, **options)
    try:
        await coordinator.check()
    except BaseException:
        await coordinator.aclose()
        raise
    return coordinator
