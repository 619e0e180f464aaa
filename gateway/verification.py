"""Runs the pre-creation checks against Graph: concurrently, retried, cached per caller.

The decisions are gateway.core.verify's; this module only reads Graph and times the reads.
Every read takes the path all calls to Graph take (`gateway.attempt.read_retried`): the
account's throttle gate, the "graph" circuit breaker, the retry policy and budget, capped at
`[verification] attempts` tries. A read that cannot be made says ERROR for its check; an open
breaker or a throttle past its deadline answers the whole declaration (503 `circuit_open`,
429 `throttled`) as it would any other call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.attempt import Tally, read_retried
from gateway.clock import Clock
from gateway.core import verify
from gateway.core.verify import Verdict, VerifyPolicy
from gateway.errors import CircuitOpenError, GatewayError, Throttled, UpstreamError
from gateway.model import CheckResult

if TYPE_CHECKING:
    from gateway.context import Gateway

COUNT_EDGES = {"campaign": "campaigns", "adset": "adsets", "ad": "ads"}
# The `kind` label of these reads in gateway_upstream_attempts_total and the latency histogram.
KIND = "precheck"


@dataclass
class _Cached:
    expires_at: float
    value: Any


@dataclass
class _Reads:
    """The reads of one verification run. An open breaker or a throttle past its deadline is
    kept as the run's `refusal`: it answers the whole declaration, not one check."""

    gw: Gateway
    token: str
    attempts: int
    refusal: GatewayError | None = None

    async def get(
        self, path: str, params: Mapping[str, str], account: str | None
    ) -> tuple[int, Any]:
        """(status, parsed JSON or None); status 0 when Graph could not be reached."""
        gw = self.gw
        try:
            reply = await read_retried(
                gw,
                Tally.start(gw),
                url=f"{gw.settings.upstream}/{path}",
                params={**params, "access_token": self.token},
                account=account,
                kind=KIND,
                max_attempts=self.attempts,
            )
        except (CircuitOpenError, Throttled) as exc:
            self.refusal = self.refusal or exc
            return 0, None
        except UpstreamError:
            return 0, None
        return reply.status, reply.doc


class Verifier:
    """Pre-creation verification for one gateway (holds the per-caller cache)."""

    def __init__(self, policy: VerifyPolicy, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._cache: dict[tuple[str, ...], _Cached] = {}

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
        gw: Gateway,
        *,
        caller: str,
        token: str,
        account_id: str,
        campaign_name: str,
        expect: Mapping[str, int],
    ) -> list[CheckResult]:
        """Every check, run concurrently; each with its verdict and how long it took. Raises
        `CircuitOpenError` or `Throttled` when a read was refused for one of those."""
        reads = _Reads(gw, token, self._policy.attempts)

        async def token_check() -> Verdict:
            return verify.check_token(*await reads.get("me", {"fields": "id,name"}, None))

        async def account_check() -> Verdict:
            status, body = await reads.get(
                account_id, {"fields": "account_status,disable_reason,name"}, account_id
            )
            return verify.check_account(status, body, account_id)

        async def name_check() -> Verdict:
            filtering = json.dumps([{"field": "name", "operator": "EQUAL", "value": campaign_name}])
            status, body = await reads.get(
                f"{account_id}/campaigns",
                {"filtering": filtering, "fields": "id,name", "limit": "50"},
                account_id,
            )
            return verify.check_campaign_name(status, body, campaign_name, self._policy)

        async def limits_check() -> Verdict:
            async def count(edge: str) -> int | None:
                status, body = await reads.get(
                    f"{account_id}/{edge}", {"summary": "true", "limit": "1"}, account_id
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

        results = list(await asyncio.gather(*(timed(n, c) for n, c in checks.items())))
        if reads.refusal is not None:
            raise reads.refusal
        return results
