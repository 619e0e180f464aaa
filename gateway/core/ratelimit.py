"""Graph's rate-limit signals (usage headers, throttle errors) turned into waits per gate.

Pure: no I/O and no clock; `now` is POSIX seconds, passed in. A *gate* is one limit Graph
applies: an ad account's score (`act_1001`), one of its business-use-case budgets
(`act_1001:ads_management`), or the app's (`app`, `app:ads_insights`). Each gate has a frozen
`GateState`; `observe` and `on_throttle_error` move it forward, `wait_for` says how long the
next call must wait and `admit` records a call that starts. gateway.ratequeue runs the queues.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

APP = "app"
NO_GATE = "none"  # an error rule's gate for a limit that is no wait
DEFAULT_KIND = "ads_management"
DEVELOPMENT_TIER = "development_access"

APP_USAGE = "X-App-Usage"
AD_ACCOUNT_USAGE = "X-Ad-Account-Usage"
BUC_USAGE = "X-Business-Use-Case-Usage"
INSIGHTS_THROTTLE = "X-FB-Ads-Insights-Throttle"
_PERCENT_FIELDS = ("call_count", "total_cputime", "total_time")

# graph-api-notes §2.2. Key "CODE/SUBCODE" matches exactly, "CODE/none" matches the code sent
# without a subcode, "CODE" matches it with any other subcode. Gate "none" marks a limit that
# is no wait: 17/1885172 (spend-cap edits per day), 613/1487632 (budget edits per hour) and
# 613/1487225 (daily spend limit) are business rules that waiting minutes does not fix (the
# same ones policies/retry.toml classifies as permanent); codes absent here are no throttle.
DEFAULT_ERRORS: Mapping[str, Mapping[str, Any]] = {
    # Ad-account score limit (burst): blocked 60 s on the standard tier, 300 s on development.
    "613/1487742": {"gate": "account", "wait_seconds": 60.0, "development_wait_seconds": 300.0},
    "17/2446079": {"gate": "account", "wait_seconds": 60.0, "development_wait_seconds": 300.0},
    "17": {"gate": "account", "wait_seconds": 60.0},  # user request limit
    "17/1885172": {"gate": "none"},
    "32": {"gate": "account", "wait_seconds": 60.0},  # Pages API limit
    # Mutation QPS (100 creates/edits per second per app and account): spread the calls.
    "613/5044001": {"gate": "ads_management", "wait_seconds": 1.0},
    # Abuse prevention cut the account's quota; it lasts, and calling again extends it.
    "613/none": {"gate": "account", "wait_seconds": 3600.0},
    "613/1996": {"gate": "app", "wait_seconds": 300.0},  # inconsistent request volume (app)
    "613/1487632": {"gate": "none"},
    "613/1487225": {"gate": "none"},
    "613": {"gate": "account", "wait_seconds": 60.0},  # another custom rate limit
    # Business-use-case budgets (rolling hour); the headers usually carry the regain time.
    "80000": {"gate": "ads_insights", "wait_seconds": 60.0},
    "80001": {"gate": "pages", "wait_seconds": 60.0},
    "80002": {"gate": "instagram", "wait_seconds": 60.0},
    "80003": {"gate": "custom_audience", "wait_seconds": 60.0},
    "80004": {"gate": "ads_management", "wait_seconds": 60.0, "development_wait_seconds": 300.0},
    "80005": {"gate": "leadgen", "wait_seconds": 60.0},
    "80006": {"gate": "messenger", "wait_seconds": 60.0},
    "80008": {"gate": "whatsapp_business_management", "wait_seconds": 60.0},
    "80009": {"gate": "catalog_management", "wait_seconds": 60.0},
    "80014": {"gate": "catalog_batch", "wait_seconds": 60.0},
    # App-level limits: every account waits.
    "4": {"gate": "app", "wait_seconds": 300.0},
    "4/1504022": {"gate": "app:ads_insights", "wait_seconds": 300.0},
    "4/1504039": {"gate": "app:ads_insights", "wait_seconds": 300.0},
}
_ERROR_KEY = re.compile(r"\d+(/(\d+|none))?")
_GATE = re.compile(r"account|app|(app:)?[a-z][a-z0-9_]*")
_RULE_KEYS = frozenset({"gate", "wait_seconds", "development_wait_seconds"})


@dataclass(frozen=True)
class ErrorRule:
    """Which gate a throttle error closes and for how long when Graph gives no regain time."""

    gate: str  # "account", "app", a BUC type ("ads_management") or "app:<type>"
    wait_seconds: float
    development_wait_seconds: float | None = None

    def wait(self, tier: str) -> float:
        if tier == DEVELOPMENT_TIER and self.development_wait_seconds is not None:
            return self.development_wait_seconds
        return self.wait_seconds


@dataclass(frozen=True)
class ThrottlePolicy:
    """The `[throttle]` policy table (policies/throttle.toml)."""

    # Above this usage percent, calls are spaced out; the spacing grows linearly from 0 here
    # to max_spacing_seconds at 100 %, so a busy account slows down before Graph blocks it.
    slow_down_pct: float = 80.0
    max_spacing_seconds: float = 1.0
    # A header at 100 % without a regain time: Graph's ad-account block on each tier.
    full_usage_wait_seconds: float = 60.0
    full_usage_development_wait_seconds: float = 300.0
    # A throttle within this long after a default-length block ended means the block was too
    # short (Meta: calls while limited extend the block): the next default wait is multiplied.
    escalation_window_seconds: float = 60.0
    escalation_factor: float = 2.0
    # No block is longer than this; when it ends, the next call finds out again.
    max_block_seconds: float = 3600.0
    # Calls that may wait per ad account; one more is refused with 429 at once.
    queue_max_per_account: int = 1000
    # The deadline of a call that brings none: it waits at most this long.
    max_wait_seconds: float = 60.0
    # Throttle errors by "CODE", "CODE/SUBCODE" or "CODE/none"; replaces the built-in table.
    errors: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(DEFAULT_ERRORS))

    def rule(self, code: int, subcode: int | None) -> ErrorRule | None:
        """The rule for a Graph error, or None when it is not a throttle worth waiting for."""
        exact = f"{code}/{subcode}" if subcode is not None else f"{code}/none"
        for key in (exact, str(code)):
            raw = self.errors.get(key)
            if raw is not None:
                if raw["gate"] == NO_GATE:
                    return None
                dev = raw.get("development_wait_seconds")
                return ErrorRule(
                    gate=raw["gate"],
                    wait_seconds=float(raw["wait_seconds"]),
                    development_wait_seconds=None if dev is None else float(dev),
                )
        return None

    def problems(self) -> list[str]:
        """Every range and shape problem of a `[throttle]` table (empty when it is valid)."""
        out: list[str] = []
        if not 0 <= self.slow_down_pct < 100:
            out.append("slow_down_pct: must be >= 0 and < 100")
        if self.max_spacing_seconds < 0 or self.escalation_window_seconds < 0:
            out.append("max_spacing_seconds, escalation_window_seconds: must be >= 0")
        out.extend(
            f"{name}: must be > 0"
            for name in (
                "full_usage_wait_seconds",
                "full_usage_development_wait_seconds",
                "max_block_seconds",
                "max_wait_seconds",
            )
            if getattr(self, name) <= 0
        )
        if self.escalation_factor < 1:
            out.append("escalation_factor: must be >= 1")
        if self.queue_max_per_account < 1:
            out.append("queue_max_per_account: must be >= 1")
        for key, raw in self.errors.items():
            where = f"errors.{key}"
            if not _ERROR_KEY.fullmatch(key):
                out.append(f'{where}: the key must be "CODE", "CODE/SUBCODE" or "CODE/none"')
            if unknown := sorted(set(raw) - _RULE_KEYS):
                out.append(f"{where}: unknown keys {unknown} (known: {sorted(_RULE_KEYS)})")
            gate = raw.get("gate")
            if not isinstance(gate, str) or not _GATE.fullmatch(gate):
                out.append(
                    f'{where}.gate: "account", "app", a BUC type, "app:<BUC type>" or "none"'
                )
            for name in ("wait_seconds", "development_wait_seconds"):
                value = raw.get(name)
                if value is None and (name == "development_wait_seconds" or gate == NO_GATE):
                    continue
                if not _positive(value):
                    out.append(f"{where}.{name}: a number > 0")
        return out

    def full_usage_wait(self, tier: str) -> float:
        if tier == DEVELOPMENT_TIER:
            return self.full_usage_development_wait_seconds
        return self.full_usage_wait_seconds


DEFAULT_POLICY = ThrottlePolicy()


@dataclass(frozen=True)
class Usage:
    """One gate's usage as one response reported it."""

    gate: str
    pct: float = 0.0  # the highest of the percents reported for it
    # Graph's estimate of how long the gate stays closed (0: not closed, or not said), and
    # the least it can be: the estimate in minutes is rounded, so the end lies in between.
    regain_seconds: float = 0.0
    regain_low_seconds: float = 0.0
    tier: str = ""


@dataclass(frozen=True)
class GateState:
    """One gate as the gateway knows it; shared between replicas in its JSON form."""

    blocked_until: float = 0.0  # no call before this (POSIX seconds)
    usage_pct: float = 0.0  # last usage percent reported
    spacing_seconds: float = 0.0  # least time between two call starts (pacing)
    admitted_at: float = 0.0  # when the last paced call started
    observed_at: float = 0.0
    tier: str = ""
    reason: str = ""  # what closed it last: "usage" or the Graph error ("80004/2446079")
    strikes: int = 0  # default-length blocks in a row that proved too short

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, doc: Any) -> GateState:
        """The state *doc* holds; missing keys take defaults, unknown keys are ignored."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"GateState: expected an object, got {doc!r}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in doc:
                continue
            value = doc[f.name]
            if f.type == "str":
                ok = isinstance(value, str)
            elif f.type == "int":
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = _number(value) is not None and not isinstance(value, str)
                value = float(value) if ok else value
            if not ok:
                raise ValueError(f"GateState.{f.name}: bad value {value!r}")
            values[f.name] = value
        return cls(**values)


_FRESH = GateState()  # a gate never written (frozen: one instance serves every default)


def account_gate(account: str) -> str:
    """The gate key of an ad account, from "act_123" or "123"."""
    return account if account.startswith("act_") else f"act_{account}"


def gates_for(account: str | None, kind: str = DEFAULT_KIND) -> tuple[str, ...]:
    """Every gate a call of BUC type *kind* on *account* (None: no ad account) must pass."""
    app = (APP, f"{APP}:{kind}")
    if account is None:
        return app
    acct = account_gate(account)
    return (acct, f"{acct}:{kind}", *app)


def error_gate(
    account: str | None, code: int, subcode: int | None, policy: ThrottlePolicy = DEFAULT_POLICY
) -> str | None:
    """The gate a throttle error closes; None when it is no throttle or names no gate here."""
    rule = policy.rule(code, subcode)
    if rule is None:
        return None
    if rule.gate == APP or rule.gate.startswith(f"{APP}:"):
        return rule.gate
    if account is None:
        return None
    acct = account_gate(account)
    return acct if rule.gate == "account" else f"{acct}:{rule.gate}"


def error_codes(error: Any) -> tuple[int, int | None] | None:
    """(code, subcode) of a Graph error: its envelope, its `error` object or a summary with
    `code` and `subcode`/`error_subcode`. None when there is no integer code."""
    if isinstance(error, Mapping) and isinstance(error.get("error"), Mapping):
        error = error["error"]
    if not isinstance(error, Mapping):
        return None
    code = _integer(error.get("code"))
    if code is None:
        return None
    subcode = _integer(error.get("error_subcode", error.get("subcode")))
    return code, subcode or None


# --- usage headers --------------------------------------------------------------------------


def parse_usage(headers: Mapping[str, str], account: str | None = None) -> tuple[Usage, ...]:
    """Every gate's usage in a response's headers; malformed headers and entries are ignored.

    *account* is the ad account the call was for: X-Ad-Account-Usage and the account part of
    X-FB-Ads-Insights-Throttle name no account of their own. X-Business-Use-Case-Usage is
    keyed by object id; each id is taken as an ad account (graph-api-notes §9: the key is not
    documented for ads; the simulator and clients show ad-account ids).
    """
    found: dict[str, Usage] = {}

    def add(usage: Usage) -> None:
        found[usage.gate] = _merge(found.get(usage.gate), usage)

    app = _json_header(headers, APP_USAGE)
    if isinstance(app, Mapping) and (pct := _percent(app, _PERCENT_FIELDS)) is not None:
        add(Usage(APP, pct))
    acct = account_gate(account) if account else None
    reset = 0.0
    doc = _json_header(headers, AD_ACCOUNT_USAGE)
    if acct and isinstance(doc, Mapping):
        pct = _percent(doc, ("acc_id_util_pct",))
        if pct is not None:
            # While the score is full, reset_time_duration is the time until calls go again.
            reset = (_number(doc.get("reset_time_duration")) or 0.0) if pct >= 100 else 0.0
            add(Usage(acct, pct, reset, reset, _tier(doc)))
    buc = _json_header(headers, BUC_USAGE)
    if isinstance(buc, Mapping):
        for object_id, entries in buc.items():
            if object_id and isinstance(entries, list):
                for usage in _buc_entries(account_gate(object_id), entries):
                    # The minutes are rounded up; the account's reset seconds in the same
                    # answer, when they fall in that last minute, say exactly when it ends.
                    if usage.gate.split(":", 1)[0] == acct and (
                        usage.regain_low_seconds < reset <= usage.regain_seconds
                    ):
                        usage = replace(usage, regain_seconds=reset, regain_low_seconds=reset)
                    add(usage)
    insights = _json_header(headers, INSIGHTS_THROTTLE)
    if isinstance(insights, Mapping):
        if (pct := _percent(insights, ("app_id_util_pct",))) is not None:
            add(Usage(f"{APP}:ads_insights", pct))
        if acct and (pct := _percent(insights, ("acc_id_util_pct",))) is not None:
            add(Usage(f"{acct}:ads_insights", pct, tier=_tier(insights)))
    return tuple(found.values())


def _buc_entries(acct: str, entries: Iterable[Any]) -> Iterable[Usage]:
    for entry in entries:
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if not isinstance(kind, str) or not _GATE.fullmatch(kind):
            continue
        pct = _percent(entry, _PERCENT_FIELDS)
        minutes = _number(entry.get("estimated_time_to_regain_access")) or 0.0
        if pct is None and not minutes:
            continue
        regain = minutes * 60.0
        yield Usage(f"{acct}:{kind}", pct or 0.0, regain, max(0.0, regain - 60.0), _tier(entry))


def usage_for(usages: Iterable[Usage], gate: str) -> Usage | None:
    """The usage that speaks for *gate*: its own, or else, for an account's BUC gate, the
    same BUC type under another id that gives a regain time (the header's key may be the
    business, not the ad account)."""
    usages = tuple(usages)
    for usage in usages:
        if usage.gate == gate:
            return usage
    if gate.startswith(f"{APP}:") or ":" not in gate:
        return None
    kind = gate.split(":", 1)[1]
    others = [u for u in usages if u.gate.endswith(f":{kind}") and u.regain_seconds > 0]
    return max(others, key=lambda u: u.regain_seconds, default=None)


def _merge(old: Usage | None, new: Usage) -> Usage:
    if old is None:
        return new
    later = new if new.regain_seconds > old.regain_seconds else old
    return replace(later, pct=max(old.pct, new.pct), tier=old.tier or new.tier)


def _json_header(headers: Mapping[str, str], name: str) -> Any:
    raw = headers.get(name)
    if raw is None:
        lowered = name.lower()
        raw = next((v for k, v in headers.items() if k.lower() == lowered), None)
    if not isinstance(raw, str):
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _number(value: Any) -> float | None:
    """A finite, non-negative number from a JSON value (numeric strings too), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _positive(value: Any) -> bool:
    return not isinstance(value, str) and bool(_number(value))


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _percent(doc: Mapping[str, Any], names: Iterable[str]) -> float | None:
    values = [n for n in (_number(doc.get(name)) for name in names) if n is not None]
    return max(values, default=None)


def _tier(doc: Mapping[str, Any]) -> str:
    tier = doc.get("ads_api_access_tier")
    return tier if isinstance(tier, str) else ""


# --- transitions ----------------------------------------------------------------------------


def pacing(pct: float, policy: ThrottlePolicy = DEFAULT_POLICY) -> float:
    """Seconds between call starts at *pct* usage: 0 up to the threshold, then growing."""
    if pct <= policy.slow_down_pct:
        return 0.0
    share = min(1.0, (pct - policy.slow_down_pct) / (100.0 - policy.slow_down_pct))
    return policy.max_spacing_seconds * share


def _block(state: GateState, now: float, high: float, low: float, policy: ThrottlePolicy) -> float:
    """The gate's new block end for a closure lasting between *low* and *high* seconds.

    A block already known to end inside (or after) that range is kept: a rounded estimate
    seen half-way through a block must not stretch it, and nothing shortens a block.
    """
    high = min(high, policy.max_block_seconds)
    if state.blocked_until >= now + min(low, high):
        return state.blocked_until
    return now + high


def observe(
    state: GateState, usage: Usage, now: float, policy: ThrottlePolicy = DEFAULT_POLICY
) -> GateState:
    """The gate after a response reported *usage* for it.

    At 100 % or with a regain time the gate closes until then (without one, for the tier's
    block time); above `slow_down_pct` calls are spaced out; below it they go freely.
    """
    tier = usage.tier or state.tier
    if usage.pct >= 100 or usage.regain_seconds > 0:
        if usage.regain_seconds > 0:
            high, low = usage.regain_seconds, usage.regain_low_seconds
        else:
            high = low = policy.full_usage_wait(tier)
        until = _block(state, now, high, low, policy)
        return replace(
            state,
            blocked_until=until,
            reason="usage" if until != state.blocked_until else state.reason,
            usage_pct=usage.pct,
            spacing_seconds=0.0,  # the block is the wait; Graph resets the usage after it
            observed_at=now,
            tier=tier,
        )
    # Every response with usage headers comes here: built directly (replace() costs twice as
    # much), every field named.
    return GateState(
        blocked_until=state.blocked_until,
        usage_pct=usage.pct,
        spacing_seconds=pacing(usage.pct, policy),
        admitted_at=state.admitted_at,
        observed_at=now,
        tier=tier,
        reason=state.reason,
        strikes=state.strikes,
    )


def on_throttle_error(
    state: GateState,
    code: int,
    subcode: int | None,
    usage: Usage | None,
    now: float,
    policy: ThrottlePolicy = DEFAULT_POLICY,
) -> GateState:
    """The gate after Graph answered a call with a throttle error (unchanged if it is none).

    Closed until the regain time *usage* (from the same answer's headers) gives; otherwise
    for the policy's wait for that code, doubled for each default block in a row that ended
    only to be throttled again soon after.
    """
    rule = policy.rule(code, subcode)
    if rule is None:
        return state
    tier = (usage.tier if usage else "") or state.tier
    if usage is not None and usage.regain_seconds > 0:
        strikes = 0
        until = _block(state, now, usage.regain_seconds, usage.regain_low_seconds, policy)
    else:
        if now < state.blocked_until:
            # A call that left before this block was known: the block already counts it.
            strikes = max(state.strikes, 1)
        elif state.blocked_until and now - state.blocked_until <= policy.escalation_window_seconds:
            strikes = state.strikes + 1
        else:
            strikes = 1
        wait = rule.wait(tier) * policy.escalation_factor ** (strikes - 1)
        until = _block(state, now, wait, wait, policy)
    return replace(
        state,
        blocked_until=until,
        reason=f"{code}/{subcode}" if subcode is not None else str(code),
        usage_pct=usage.pct if usage else state.usage_pct,
        spacing_seconds=0.0,
        observed_at=now,
        tier=tier,
        strikes=strikes,
    )


def wait_for(state: GateState, now: float) -> float:
    """Seconds until the gate lets the next call start (0 when open)."""
    return max(0.0, state.blocked_until - now, state.admitted_at + state.spacing_seconds - now)


def open_unpaced(state: GateState, now: float) -> bool:
    """Whether a call may start now and starting it changes nothing: the gate is not
    blocked, its spacing has passed and it is not paced (so `admit` keeps it as it is)."""
    return state.spacing_seconds <= 0 and wait_for(state, now) <= 0


def admit(state: GateState, now: float) -> GateState:
    """The gate after a call started at *now* (only a paced gate remembers it)."""
    return replace(state, admitted_at=now) if state.spacing_seconds > 0 else state


# --- several gates at once (what a store applies atomically) ---------------------------------


def estimate(states: Mapping[str, GateState], now: float, ahead: int = 0) -> float:
    """A call's likely wait behind *ahead* queued calls: the longest gate wait plus one
    spacing per call ahead."""
    wait = max((wait_for(s, now) for s in states.values()), default=0.0)
    spacing = max((s.spacing_seconds for s in states.values()), default=0.0)
    return wait + ahead * spacing


def try_admit(states: Mapping[str, GateState], now: float) -> tuple[float, dict[str, GateState]]:
    """(0, gates with the call admitted) when every gate is open, else (wait, unchanged)."""
    wait = estimate(states, now)
    if wait > 0:
        return wait, dict(states)
    return 0.0, {key: admit(state, now) for key, state in states.items()}


def apply_usages(
    states: Mapping[str, GateState],
    usages: Iterable[Usage],
    now: float,
    policy: ThrottlePolicy = DEFAULT_POLICY,
) -> dict[str, GateState]:
    """*states* after a response reported *usages* (a gate not in *states* starts fresh)."""
    out = dict(states)
    for usage in usages:
        out[usage.gate] = observe(out.get(usage.gate, _FRESH), usage, now, policy)
    return out


def record_throttle(
    states: Mapping[str, GateState],
    gate: str | None,
    codes: tuple[int, int | None] | None,
    usages: tuple[Usage, ...],
    now: float,
    policy: ThrottlePolicy = DEFAULT_POLICY,
) -> tuple[float | None, dict[str, GateState]]:
    """A throttle answer: its usages observed, then *gate* closed for error *codes*.

    Returns the closed gate's wait (None when the error closed no gate) and the new states.
    """
    out = apply_usages(states, usages, now, policy)
    if gate is None or codes is None:
        return None, out
    out[gate] = on_throttle_error(out[gate], *codes, usage_for(usages, gate), now, policy)
    return wait_for(out[gate], now), out
