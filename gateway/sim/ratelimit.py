"""Graph's rate limits as the simulator applies them: ad-account score, mutation QPS, app calls.

Pure: no I/O and no clock (`now` is an argument). Models graph-api-notes §3: a per-account
score (read 1, write 3) that decays linearly to zero over the decay window and, once it would
pass the maximum, blocks the account for the block time; creates and edits above the
mutation QPS get 613/5044001; app-wide calls per rolling hour above the allowance get code 4.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.sim import errors
from gateway.sim.config import RateLimits
from gateway.sim.errors import GraphError

APP_WINDOW_SECONDS = 3600.0
MUTATION_WINDOW_SECONDS = 1.0


@dataclass
class AccountUsage:
    score: float = 0.0
    updated_at: float = 0.0
    blocked_until: float = 0.0
    mutations: deque[float] = field(default_factory=deque)


class RateModel:
    """Usage per ad account and for the app; decides whether a call is throttled."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self.accounts: dict[str, AccountUsage] = {}
        # (second, calls in that second), oldest first: the app's rolling hour.
        self._app_calls: deque[tuple[int, int]] = deque()
        self._app_total = 0

    def _usage(self, account_id: str, now: float) -> AccountUsage:
        """The account's usage brought up to *now*: decayed, or reset when a block ended.

        While blocked the score stays at the maximum; when the block ends it is back to zero
        (`reset_time_duration` counts down to exactly that moment).
        """
        usage = self.accounts.setdefault(account_id, AccountUsage(updated_at=now))
        if usage.blocked_until:
            if now >= usage.blocked_until:
                usage.score, usage.blocked_until = 0.0, 0.0
        else:
            rate = self.limits.max_score / self.limits.decay_seconds
            usage.score = max(0.0, usage.score - max(0.0, now - usage.updated_at) * rate)
        usage.updated_at = max(usage.updated_at, now)
        return usage

    def _app_prune(self, now: float) -> None:
        horizon = now - APP_WINDOW_SECONDS
        while self._app_calls and self._app_calls[0][0] <= horizon:
            self._app_total -= self._app_calls.popleft()[1]

    def charge(
        self, account_id: str | None, *, write: bool, mutation: bool, now: float
    ) -> GraphError | None:
        """Count one call; the throttle error Graph would answer instead, or None."""
        self._app_prune(now)
        if self._app_total >= self.limits.app_calls_per_hour:
            return errors.app_throttled()
        second = int(now)
        if self._app_calls and self._app_calls[-1][0] == second:
            self._app_calls[-1] = (second, self._app_calls[-1][1] + 1)
        else:
            self._app_calls.append((second, 1))
        self._app_total += 1
        if account_id is None:
            return None
        usage = self._usage(account_id, now)
        if now < usage.blocked_until:
            return errors.account_throttled(self.limits.throttle_error)
        cost = self.limits.write_cost if write else self.limits.read_cost
        if usage.score + cost > self.limits.max_score:
            usage.score = self.limits.max_score
            usage.blocked_until = now + self.limits.block_seconds
            return errors.account_throttled(self.limits.throttle_error)
        usage.score += cost
        if mutation:
            while usage.mutations and usage.mutations[0] <= now - MUTATION_WINDOW_SECONDS:
                usage.mutations.popleft()
            if len(usage.mutations) >= self.limits.mutation_qps:
                return errors.mutation_rate()
            usage.mutations.append(now)
        return None

    def block(self, account_id: str, seconds: float, *, now: float) -> None:
        """Throttle *account_id* for *seconds* from *now* (a fault or the control API)."""
        usage = self._usage(account_id, now)
        usage.score = self.limits.max_score
        usage.blocked_until = max(usage.blocked_until, now + seconds)

    def _account_numbers(self, account_id: str, now: float) -> tuple[float, int, int]:
        """(percent used, seconds until the score resets, minutes until access is regained)."""
        usage = self._usage(account_id, now)
        pct = 100.0 * usage.score / self.limits.max_score
        blocked = max(0.0, usage.blocked_until - now)
        rate = self.limits.max_score / self.limits.decay_seconds
        reset = math.ceil(blocked) if blocked else math.ceil(usage.score / rate)
        return pct, reset, math.ceil(blocked / 60.0)

    def headers(self, account_ids: Iterable[str], *, now: float) -> dict[str, str]:
        """Usage headers for a response that touched *account_ids* (numeric ids)."""
        out: dict[str, str] = {}
        self._app_prune(now)
        app_pct = min(100, int(100 * self._app_total / self.limits.app_calls_per_hour))
        if app_pct >= self.limits.header_min_pct:
            out["X-App-Usage"] = json.dumps(
                {"call_count": app_pct, "total_cputime": app_pct, "total_time": app_pct}
            )
        buc: dict[str, list[dict[str, Any]]] = {}
        for account_id in sorted(set(account_ids)):
            pct, reset, regain = self._account_numbers(account_id, now)
            if pct < self.limits.header_min_pct and not regain:
                continue
            buc[account_id] = [
                {
                    "type": "ads_management",
                    "call_count": int(pct),
                    "total_cputime": int(pct),
                    "total_time": int(pct),
                    "estimated_time_to_regain_access": regain,
                    "ads_api_access_tier": self.limits.tier,
                }
            ]
            # One ad account per response carries X-Ad-Account-Usage (the last one touched).
            out["X-Ad-Account-Usage"] = json.dumps(
                {
                    "acc_id_util_pct": round(pct, 2),
                    "reset_time_duration": reset,
                    "ads_api_access_tier": self.limits.tier,
                }
            )
        if buc:
            out["X-Business-Use-Case-Usage"] = json.dumps(buc)
        return out

    def snapshot(self, *, now: float) -> dict[str, Any]:
        """Usage per account for the control API."""
        out: dict[str, Any] = {"app_calls_last_hour": self._app_total, "accounts": {}}
        for account_id in sorted(self.accounts):
            pct, reset, _ = self._account_numbers(account_id, now)
            usage = self.accounts[account_id]
            out["accounts"]["act_" + account_id] = {
                "score": round(usage.score, 3),
                "util_pct": round(pct, 2),
                "reset_seconds": reset,
                "blocked_for_seconds": round(max(0.0, usage.blocked_until - now), 3),
            }
        return out
