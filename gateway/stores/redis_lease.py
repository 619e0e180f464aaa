"""A lease held across every gateway process on one Redis: one holder at a time per name.

For work that must not run twice at once on two replicas (a rollback execution of one job or
campaign). Built on redis-py's `Lock` (SET NX PX with a random token; released and renewed
only by its holder, by Lua). The lease is given a time to live and renewed every third of it
while held, so a holder that dies (`kill -9`, a lost host) lets it go after at most
`ttl_seconds`, and a holder that lives keeps it however long its work takes.

A Redis that cannot be reached when the lease is asked for raises StoreUnavailable: the
work is refused rather than run unserialised. If Redis is lost while the lease is held, the
work goes on (it was started under the lease; what it does must be safe to repeat anyway)
and the lost renewal is logged.

Key: `{prefix}lease:{name}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from gateway import logs
from gateway.clock import Clock
from gateway.errors import StoreUnavailable

DEFAULT_TTL_SECONDS = 30.0
# How often a waiter asks again whether the lease is free.
POLL_SECONDS = 0.05


class RedisLeases:
    """Named leases under *prefix* on *client*."""

    def __init__(self, client: Redis, prefix: str, clock: Clock) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock  # the coordinator's: real time (Redis counts the TTL in it)

    def key(self, name: str) -> str:
        return f"{self._prefix}lease:{name}"

    @asynccontextmanager
    async def hold(
        self,
        name: str,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        poll_seconds: float = POLL_SECONDS,
    ) -> AsyncIterator[None]:
        """Wait until the lease *name* is free (asking every *poll_seconds*), hold it (renewed)
        for the body, release it."""
        lock = Lock(self._client, self.key(name), timeout=ttl_seconds, sleep=poll_seconds)
        try:
            await lock.acquire()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(
                f"Redis unavailable (lease {name}): {type(exc).__name__}: {exc}"
            ) from exc
        try:
            async with asyncio.TaskGroup() as group:
                renewer = group.create_task(self._renew(lock, name, ttl_seconds))
                try:
                    yield
                finally:
                    renewer.cancel()
        except BaseExceptionGroup as failed:
            # Only the body can fail here (the renewer logs its own errors): its error, as is.
            if len(failed.exceptions) == 1:
                raise failed.exceptions[0] from None
            raise
        finally:
            try:
                await lock.release()
            except (LockError, RedisError, OSError, TimeoutError) as exc:
                # Lapsed (another holder may have it now) or Redis is gone: nothing to undo.
                logs.event("lease_release_failed", lease=name, error=type(exc).__name__)

    async def _renew(self, lock: Lock, name: str, ttl_seconds: float) -> None:
        while True:
            await self._clock.sleep(ttl_seconds / 3)
            try:
                await lock.reacquire()
            except (LockError, RedisError, OSError, TimeoutError) as exc:
                logs.event(
                    "lease_renewal_failed",
                    lease=name,
                    error=type(exc).__name__,
                    level=logging.WARNING,
                )
