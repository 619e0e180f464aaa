"""Pre-creation verification: what Graph's answers say about a job before anything exists.

Pure: each function takes the HTTP status and parsed body of one Graph read and returns a
`Verdict`. The shell runs the reads (concurrently, retried, cached) and times them.

Checks (DESIGN.md §1): the token is valid; the ad account is reachable and ACTIVE; the
campaign name is not already used in the account (policy: reject or warn); the account stays
below its object limits once the job's entities exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# graph-api-notes §6.1
ACCOUNT_STATUS = {
    1: "ACTIVE",
    2: "DISABLED",
    3: "UNSETTLED",
    7: "PENDING_RISK_REVIEW",
    8: "PENDING_SETTLEMENT",
    9: "IN_GRACE_PERIOD",
    100: "PENDING_CLOSURE",
    101: "CLOSED",
}
PASSED, FAILED, WARNING, ERROR = "passed", "failed", "warning", "error"


@dataclass(frozen=True)
class Verdict:
    status: str  # passed | failed | warning | error (the check could not be run)
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyPolicy:
    """The [verification] policy table."""

    duplicate_name: str = "reject"  # reject | warn
    # Live objects per account that a job may not push past (graph-api-notes §6.3).
    limits: Mapping[str, int] = field(
        default_factory=lambda: {"campaign": 6000, "adset": 6000, "ad": 6000}
    )
    # Non-archived ads per ad set.
    ads_per_adset: int = 50
    cache_seconds: float = 5.0  # reuse a caller's token and account-status reads this long
    attempts: int = 3  # a read that fails transiently is tried this many times
    # Post-creation verification: run automatically once a job completes (by the recovery
    # worker, never in a create's path), and repair what it finds when this says so.
    after_completion: bool = True
    repair_after_completion: bool = False


def _graph_error(body: Any) -> Mapping[str, Any] | None:
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, Mapping) else None


def _unreachable(status: int, body: Any, what: str) -> Verdict | None:
    """ERROR for answers that say nothing about the check (5xx, transient, not JSON)."""
    err = _graph_error(body)
    if status >= 500 or status == 0 or (err is not None and err.get("is_transient")):
        code = err.get("code") if err else None
        return Verdict(ERROR, f"{what}: Graph did not answer usefully (HTTP {status}, code {code})")
    if err is None and not isinstance(body, Mapping):
        return Verdict(ERROR, f"{what}: Graph's answer was not JSON (HTTP {status})")
    return None


def check_token(status: int, body: Any) -> Verdict:
    """GET /me with the caller's token."""
    err = _graph_error(body)
    if err is not None and err.get("code") in (102, 190, 104):
        sub = err.get("error_subcode")
        return Verdict(
            FAILED,
            f"the access token is not valid (Graph code {err.get('code')}"
            + (f"/{sub}" if sub else "")
            + f"): {err.get('message', '')}",
            {"code": err.get("code"), "subcode": sub},
        )
    if (v := _unreachable(status, body, "token")) is not None:
        return v
    if err is not None:
        return Verdict(
            FAILED, f"token check refused: {err.get('message', '')}", {"code": err.get("code")}
        )
    return Verdict(PASSED, "the access token is valid", {"user_id": body.get("id")})


def check_account(status: int, body: Any, account_id: str) -> Verdict:
    """GET /act_{id}?fields=account_status,disable_reason,name."""
    if (v := _unreachable(status, body, "account")) is not None:
        return v
    err = _graph_error(body)
    if err is not None:
        return Verdict(
            FAILED,
            f"ad account {account_id} cannot be used with this token (Graph code "
            f"{err.get('code')}): {err.get('message', '')}",
            {"code": err.get("code")},
        )
    raw = body.get("account_status")
    account_status = int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None
    name = ACCOUNT_STATUS.get(account_status or -1, str(raw))
    data = {"account_status": account_status, "disable_reason": body.get("disable_reason")}
    if account_status != 1:
        reason = body.get("disable_reason")
        return Verdict(
            FAILED,
            f"ad account {account_id} is {name} (account_status={raw}"
            + (f", disable_reason={reason}" if reason else "")
            + "), not ACTIVE",
            data,
        )
    return Verdict(PASSED, f"ad account {account_id} is ACTIVE", data)


def check_campaign_name(status: int, body: Any, name: str, policy: VerifyPolicy) -> Verdict:
    """GET /act_{id}/campaigns filtered on name EQUAL (live campaigns only)."""
    if (v := _unreachable(status, body, "campaign_name")) is not None:
        return v
    err = _graph_error(body)
    if err is not None:
        return Verdict(ERROR, f"campaign_name: Graph refused the look-up: {err.get('message', '')}")
    data = body.get("data")
    if not isinstance(data, list):
        return Verdict(ERROR, "campaign_name: Graph's answer has no list of campaigns")
    same = [c for c in data if isinstance(c, Mapping) and c.get("name") == name]
    if not same:
        return Verdict(PASSED, f"no campaign named {name!r} in the account")
    ids = [str(c.get("id")) for c in same]
    outcome = WARNING if policy.duplicate_name == "warn" else FAILED
    return Verdict(
        outcome,
        f"{len(same)} campaign(s) named {name!r} already exist: {', '.join(ids)}",
        {"existing_ids": ids},
    )


def check_limits(
    counts: Mapping[str, int | None], expect: Mapping[str, int], policy: VerifyPolicy
) -> Verdict:
    """Live counts per type (None where Graph could not be read) plus the job's entities,
    against the account limits."""
    missing = [t for t in policy.limits if t in expect and counts.get(t) is None]
    if missing:
        return Verdict(ERROR, f"object_limits: could not count {', '.join(missing)} on Graph")
    over = []
    for entity_type, limit in policy.limits.items():
        existing = counts.get(entity_type) or 0
        wanted = expect.get(entity_type, 0)
        if wanted and existing + wanted > limit:
            over.append(f"{entity_type}: {existing} live + {wanted} wanted > limit {limit}")
    per_adset = expect.get("ad", 0) / max(1, expect.get("adset", 1))
    if per_adset > policy.ads_per_adset:
        over.append(f"ad: {per_adset:g} per ad set > limit {policy.ads_per_adset}")
    data = {"counts": dict(counts), "limits": dict(policy.limits)}
    if over:
        return Verdict(FAILED, "the account would pass its object limits: " + "; ".join(over), data)
    return Verdict(PASSED, "the account stays below its object limits", data)


def overall(verdicts: Mapping[str, Verdict]) -> str:
    """failed if any check failed; error if one could not run; else passed."""
    statuses = {v.status for v in verdicts.values()}
    if FAILED in statuses:
        return FAILED
    if ERROR in statuses:
        return ERROR
    return PASSED
