"""The retry budget across the process (or every replica, with a shared store).

Shell over gateway.core.retry's `record_request` / `try_retry`: the pure functions decide, a
`BudgetStore` applies them atomically. Count one request per logical request (not per try);
ask `allow_retry()` before each retry: a refusal means the caller gets its error instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from gateway.clock import Clock
from gateway.core.retry import BudgetState, RetryPolicy, record_request, try_retry

R = TypeVar("R")


class BudgetStore(Protocol):
    """Where the budget's counts live: this process (memory) or shared by replicas (Redis)."""

    async def apply(
        self, window_seconds: int, fn: Callable[[BudgetState], tuple[BudgetState, R]]
    ) -> R:
        """Atomically read the state (an empty `BudgetState(window_seconds)` if none is
        stored), run the pure *fn*, store the state it returns and return its result. *fn*
        may run more than once (an optimistic backend retries on conflict). Raises
        StoreError if the store is down."""
        ...


class MemoryBudgetStore:
    """The budget of one process: `apply` never awaits, so it is atomic here."""

    def __init__(self) -> None:
        self._state: BudgetState | None = None

    async def apply(
        self, window_seconds: int, fn: Callable[[BudgetState], tuple[BudgetState, R]]
    ) -> R:
        state = self._state or BudgetState(window_seconds)
        self._state, result = fn(state)
        return result


class RetryBudget:
    """Retries ≤ budget_ratio of requests over the window (with a floor), as the policy says."""

    def __init__(self, policy: RetryPolicy, clock: Clock, store: BudgetStore | None = None) -> None:
        self.policy = policy
        self._clock = clock
        self._store: BudgetStore = store or MemoryBudgetStore()
        # Requests are counted here and written to the store once per second (and before any
        # decision that reads it): one store write per second instead of one per request —
        # for a shared (Redis) store, one round trip per second instead of per request.
        self._second = 0
        self._pending = 0

    async def request(self) -> None:
        """Count one logical request (call once per request, not per try)."""
        second = math.floor(self._clock.now())
        if second != self._second:
            await self._flush()
            self._second = second
        self._pending += 1

    async def _flush(self) -> None:
        pending, second = self._pending, self._second
        if not pending:
            return
        self._pending = 0
        await self._store.apply(
            self.policy.budget_window_seconds,
            lambda s: (record_request(s, second, pending), None),
        )

    async def allow_retry(self) -> bool:
        """Whether one more retry fits; if so it is counted."""
        await self._flush()
        now, policy = self._clock.now(), self.policy
        return await self._store.apply(
            policy.budget_window_seconds, lambda s: try_retry(s, now, policy)
        )

    async def snapshot(self) -> dict[str, Any]:
        """Requests and retries in the current window, for the admin API."""
        await self._flush()
        now, policy = self._clock.now(), self.policy

        def look(state: BudgetState) -> tuple[BudgetState, dict[str, Any]]:
            live = [b for b in state.buckets if b.second > now - policy.budget_window_seconds]
            requests = sum(b.requests for b in live)
            retries = sum(b.retries for b in live)
            allowance = max(
                policy.budget_min_retries_per_second * policy.budget_window_seconds,
                policy.budget_ratio * requests,
            )
            doc = {"requests": requests, "retries": retries, "allowance": allowance}
            return state, doc

        return await self._store.apply(policy.budget_window_seconds, look)
