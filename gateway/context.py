"""The running gateway's shared parts, handed to the proxy and admin handlers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway.breaker import BreakerRegistry
from gateway.budget import RetryBudget
from gateway.clock import Clock
from gateway.core.classify import CreateRules
from gateway.core.policy import PolicySet
from gateway.metrics import Metrics
from gateway.ports import AuditStore, IdempotencyStore, JobStore, Ledger
from gateway.ratequeue import ThrottleGate
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.stores.redis_coord import RedisCoordinator
    from gateway.verification import Verifier

# How many callers' tokens the gateway keeps in memory (never on disk) so its recovery worker
# can look on Graph for them; beyond that it falls back to GATEWAY_ROLLBACK_TOKEN.
TOKEN_MEMORY = 1000


@dataclass
class Gateway:
    settings: Settings
    policy: PolicySet
    ledger: Ledger
    jobs: JobStore
    idempotency: IdempotencyStore
    audit: AuditStore  # the audit trail of safety actions (rollbacks, ...)
    session: aiohttp.ClientSession
    metrics: Metrics
    clock: Clock
    token_key: bytes
    rules: CreateRules
    timeout: aiohttp.ClientTimeout
    verifier: Verifier
    gate: ThrottleGate
    breakers: BreakerRegistry
    budget: RetryBudget
    started_at: float = 0.0  # POSIX seconds when this process opened the gateway
    tokens: OrderedDict[str, str] = field(default_factory=OrderedDict)
    # This process's own proxy port, once bound (a repair re-creates through the normal path).
    self_url: str | None = None
    # Ledger rows a request of this process is reconciling (the recovery worker leaves them).
    reconciling: set[int] = field(default_factory=set)
    # The Redis coordinator the breakers, gates and budget share (None: in-process), for /readyz.
    coordinator: RedisCoordinator | None = None
    # Work of this gateway that must run one at a time, by name (gateway.serial; weak: a lock
    # nobody holds or waits for goes away). Across replicas, a Redis lease as well.
    local_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def remember_token(self, caller: str, token: str) -> None:
        """Keep a caller's token in memory only, for reconciliation reads on its behalf."""
        self.tokens[caller] = token
        self.tokens.move_to_end(caller)
        while len(self.tokens) > TOKEN_MEMORY:
            self.tokens.popitem(last=False)

    @property
    def single_process(self) -> bool:
        """SQLite is one process's database: no other replica can have a create in flight."""
        return self.settings.database_url.startswith("sqlite:")

    def token_for(self, caller: str) -> str | None:
        return self.tokens.get(caller) or self.settings.rollback_token

    def caller(self, token: str | None) -> str:
        """Who is calling, as the ledger stores it: an HMAC of the token, never the token."""
        if not token:
            return "anonymous"
        return hmac.new(self.token_key, token.encode(), hashlib.sha256).hexdigest()[:32]


GATEWAY = web.AppKey("gateway", Gateway)
