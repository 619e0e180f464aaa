"""Runs the pre-creation checks against Graph: concurrently, retried, cached per caller.

The decisions are gateway.core.verify's; this module only reads Graph and times the reads.
Reads are retried on transient failures with aiohttp-retry (they change nothing).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp_retry import ExponentialRetry, RetryClient

from gateway.clock import Clock
from gateway.core import verify
from gateway.core.verify import Verdict, VerifyPolicy
from gateway.model import CheckResult

COUNT_EDGES = {"campaign": "campaigns", "adset": "adsets", "ad": "ads"}
# Transient answers worth another try: Graph's 5xx and its edge's HTML 502s.
RETRY_STATUSES = frozenset({500, 502, 503, 504})


@dataclass
class _Cached:
    expires_at: float
    value: Any


class Verifier:
    """Pre-creation verification for one gateway (holds the per-caller cache)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        upstream: str,
        policy: VerifyPolicy,
        clock: Clock,
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        self._client = RetryClient(
            client_session=session,
            raise_for_status=False,
            retry_options=ExponentialRetry(
                attempts=policy.attempts,
                start_timeout=0.05,
                max_timeout=1.0,
                statuses=set(RETRY_STATUSES),
                exceptions={aiohttp.ClientError, TimeoutError},
            ),
        )
        self._upstream = upstream
        self._policy = policy
        self._clock = clock
        self._timeout = timeout
        self._cache: dict[tuple[str, ...], _Cached] = {}

    async def _read(self, token: str, path: str, params: Mapping[str, str]) -> tuple[int, Any]:
        """(status, parsed JSON or None); status 0 when Graph could not be reached."""
        try:
            async with self._client.get(
                f"{self._upstream}/{path}",
                params={**params, "access_token": token},
                timeout=self._timeout,
            ) as resp:
                raw = await resp.read()
                try:
                    return resp.status, json.loads(raw) if raw else None
                except ValueError:
                    return resp.status, None
        except (aiohttp.ClientError, TimeoutError):
            return 0, None

    async def _cached(
        self, key: tuple[str, ...], compute: Callable[[], Awaitable[Verdict]]
    ) -> Verdict:
        now = self._clock.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit.expires_at > now:
            value: Verdict = hit.value
            return value
        verdict = await compute()
        # Only definite answers are cached: an error is worth asking again.
        if verdict.status != verify.ERROR:
            self._cache[key] = _Cached(now + self._policy.cache_seconds, verdict)
        return verdict

    async def run(
        self,
        *,
        caller: str,
        token: str,
        account_id: str,
        campaign_name: str,
        expect: Mapping[str, int],
    ) -> list[CheckResult]:
        """Every check, run concurrently; each with its verdict and how long it took."""

        async def token_check() -> Verdict:
            return verify.check_token(*await self._read(token, "me", {"fields": "id,name"}))

        async def account_check() -> Verdict:
            status, body = await self._read(
                token, account_id, {"fields": "account_status,disable_reason,name"}
            )
            return verify.check_account(status, body, account_id)

        async def name_check() -> Verdict:
            filtering = json.dumps([{"field": "name", "operator": "EQUAL", "value": campaign_name}])
            status, body = await self._read(
                token,
                f"{account_id}/campaigns",
                {"filtering": filtering, "fields": "id,name", "limit": "50"},
            )
            return verify.check_campaign_name(status, body, campaign_name, self._policy)

        async def limits_check() -> Verdict:
            async def count(edge: str) -> int | None:
                status, body = await self._read(
                    token, f"{account_id}/{edge}", {"summary": "true", "limit": "1"}
                )
                summary = body.get("summary") if isinstance(body, dict) else None
                total = summary.get("total_count") if isinstance(summary, dict) else None
                return int(total) if status == 200 and isinstance(total, int) else None

            types = [t for t in COUNT_EDGES if t in expect]
            totals = await asyncio.gather(*(count(COUNT_EDGES[t]) for t in types))
            return verify.check_limits(dict(zip(types, totals, strict=True)), expect, self._policy)

        checks: dict[str, Callable[[], Awaitable[Verdict]]] = {
            "token": lambda: self._cached(("token", caller), token_check),
            "account": lambda: self._cached(("account", caller, account_id), account_check),
            "campaign_name": name_check,
            # Counts change with every create (the gateway's own too): never cached.
            "object_limits": limits_check,
        }

        async def timed(name: str, check: Callable[[], Awaitable[Verdict]]) -> CheckResult:
            started = self._clock.monotonic()
            verdict = await check()
            took = round((self._clock.monotonic() - started) * 1000, 3)
            return CheckResult(name, verdict.status, verdict.detail, took, verdict.data)

        return list(await asyncio.gather(*(timed(n, c) for n, c in checks.items())))
