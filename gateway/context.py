"""The running gateway's shared parts, handed to the proxy and admin handlers."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from gateway.clock import Clock
from gateway.core.classify import CreateRules
from gateway.core.policy import PolicySet
from gateway.metrics import Metrics
from gateway.ports import Ledger
from gateway.settings import Settings


@dataclass
class Gateway:
    settings: Settings
    policy: PolicySet
    ledger: Ledger
    session: aiohttp.ClientSession
    metrics: Metrics
    clock: Clock
    token_key: bytes
    rules: CreateRules
    timeout: aiohttp.ClientTimeout

    def caller(self, token: str | None) -> str:
        """Who is calling, as the ledger stores it: an HMAC of the token, never the token."""
        if not token:
            return "anonymous"
        return hmac.new(self.token_key, token.encode(), hashlib.sha256).hexdigest()[:32]


GATEWAY = web.AppKey("gateway", Gateway)
