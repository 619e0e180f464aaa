"""Work that must run one at a time across the whole gateway, by name.

Within a process an asyncio lock per name (on the Gateway: one per gateway, so that two
gateways in one test process behave as two replicas). Across replicas, when Redis is
configured, a Redis lease of the same name as well (gateway.stores.redis_lease): renewed while
held, lapsing after its holder dies. Without Redis there is one process, and the lock is all.
A Redis that cannot be reached raises StoreUnavailable before the work starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.context import Gateway
from gateway.stores.redis_lease import DEFAULT_TTL_SECONDS, POLL_SECONDS


@asynccontextmanager
async def one_at_a_time(
    gw: Gateway,
    name: str,
    *,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    poll_seconds: float = POLL_SECONDS,
) -> AsyncIterator[None]:
    """Hold *name* for the body, waiting for whoever holds it (in this process first: only
    one waiter per process asks Redis)."""
    lock = gw.local_locks.setdefault(name, asyncio.Lock())
    async with lock:
        if gw.coordinator is None:
            yield
            return
        leases = gw.coordinator.leases
        async with leases.hold(name, ttl_seconds=ttl_seconds, poll_seconds=poll_seconds):
            yield
