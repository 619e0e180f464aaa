"""Simulator configuration: default accounts and tokens, limits, rate limits, fault rules.

Pure: parses a TOML document (already loaded into a mapping) into frozen values and reports
every problem at once. The defaults are the documented starting world (README "Simulator").
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from gateway.sim.errors import THROTTLES
from gateway.sim.faults import parse_rule
from gateway.sim.schema import SimConfigError as SimConfigError  # re-exported for callers
from gateway.sim.schema import build

VERSION_RE = re.compile(r"^v(\d+)\.(\d+)$")


class TokenKind(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"
    NO_PERMISSION = "no_permission"


class AccountStatus:
    """`account_status` values (graph-api-notes §6.1)."""

    ACTIVE = 1
    DISABLED = 2
    UNSETTLED = 3
    PENDING_RISK_REVIEW = 7
    PENDING_SETTLEMENT = 8
    IN_GRACE_PERIOD = 9
    PENDING_CLOSURE = 100
    CLOSED = 101
    KNOWN = frozenset({1, 2, 3, 7, 8, 9, 100, 101})


@dataclass(frozen=True)
class AccountSpec:
    id: str  # "act_<digits>"
    name: str
    account_status: int = AccountStatus.ACTIVE
    disable_reason: int = 0
    currency: str = "USD"
    timezone_name: str = "America/Los_Angeles"

    @property
    def account_id(self) -> str:
        return self.id.removeprefix("act_")


@dataclass(frozen=True)
class TokenSpec:
    token: str
    kind: TokenKind = TokenKind.VALID
    user_id: str = "10001"
    user_name: str = "Sim User"
    app_id: str = "900000000000001"
    # None: every ad account; otherwise the "act_..." ids the token may use.
    accounts: tuple[str, ...] | None = None
    scopes: tuple[str, ...] = ("ads_management", "ads_read", "business_management")


@dataclass(frozen=True)
class ObjectLimits:
    """Per-account object limits (graph-api-notes §6.3), small here so tests can reach them."""

    campaigns_per_account: int = 6000
    adsets_per_account: int = 6000
    ads_per_account: int = 6000
    ads_per_adset: int = 50
    deep_copy_sync_max_ads: int = 3
    batch_max_ops: int = 50
    page_default_limit: int = 25
    page_max_limit: int = 5000


@dataclass(frozen=True)
class RateLimits:
    """Ad-account score model (graph-api-notes §3.5): reads cost 1, writes 3; the score decays
    linearly to zero over `decay_seconds`; reaching `max_score` blocks the account for
    `block_seconds`. Defaults are Graph's standard (full) access tier."""

    tier: str = "standard_access"
    max_score: float = 9000.0
    decay_seconds: float = 300.0
    block_seconds: float = 60.0
    read_cost: float = 1.0
    write_cost: float = 3.0
    # Which throttle error a blocked account gets: "80004" (BUC ads_management), "17", "613".
    throttle_error: str = "80004"
    # Creates and edits per second per account before 613/5044001.
    mutation_qps: int = 100
    # App-wide calls per rolling hour before code 4 (X-App-Usage reaches 100 %).
    app_calls_per_hour: int = 1_000_000
    # Send usage headers only once usage reaches this percent (Graph omits them near 0 %).
    header_min_pct: float = 0.0


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0
    default_version: str = "v25.0"
    # Versions older than this answer 2635 "deprecated version"; newer than latest, 2500.
    min_version: str = "v19.0"
    latest_version: str = "v26.0"
    accounts: tuple[AccountSpec, ...] = ()
    tokens: tuple[TokenSpec, ...] = ()
    object_limits: ObjectLimits = field(default_factory=ObjectLimits)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    faults: tuple[Mapping[str, Any], ...] = ()


DEFAULT_ACCOUNTS: tuple[AccountSpec, ...] = (
    AccountSpec("act_1001", "Sim Active Account"),
    AccountSpec("act_1002", "Sim Second Active Account"),
    AccountSpec(
        "act_2001", "Sim Disabled Account", account_status=AccountStatus.DISABLED, disable_reason=1
    ),
    AccountSpec("act_3001", "Sim Unsettled Account", account_status=AccountStatus.UNSETTLED),
)

DEFAULT_TOKENS: tuple[TokenSpec, ...] = (
    TokenSpec("sim-token-alice", user_id="10001", user_name="Alice Sim"),
    TokenSpec("sim-token-bob", user_id="10002", user_name="Bob Sim"),
    TokenSpec("sim-token-expired", kind=TokenKind.EXPIRED, user_id="10003"),
    TokenSpec("sim-token-invalid", kind=TokenKind.INVALID, user_id="10004"),
    TokenSpec(
        "sim-token-readonly",
        kind=TokenKind.NO_PERMISSION,
        user_id="10005",
        scopes=("ads_read",),
    ),
)


def version_tuple(version: str) -> tuple[int, int]:
    m = VERSION_RE.match(version)
    if not m:
        raise ValueError(f"not a Graph version: {version!r}")
    return int(m.group(1)), int(m.group(2))


def _accounts(items: Any, problems: list[str]) -> tuple[AccountSpec, ...]:
    if not isinstance(items, list):
        problems.append("accounts: expected a list of tables")
        return ()
    out = []
    for i, item in enumerate(items):
        where = f"accounts[{i}]"
        spec = build(AccountSpec, item, where, problems)
        # Checked on the raw values, so they are listed even when the table has other errors.
        raw = item if isinstance(item, Mapping) else {}
        if isinstance(raw.get("id"), str) and not re.fullmatch(r"act_\d{1,20}", raw["id"]):
            problems.append(f"{where}.id: expected 'act_<digits>', got {raw['id']!r}")
        status = raw.get("account_status", AccountStatus.ACTIVE)
        if isinstance(status, int) and status not in AccountStatus.KNOWN:
            problems.append(f"{where}.account_status: unknown status {status}")
        if spec is not None:
            out.append(spec)
    return tuple(out)


def _tokens(items: Any, problems: list[str]) -> tuple[TokenSpec, ...]:
    if not isinstance(items, list):
        problems.append("tokens: expected a list of tables")
        return ()
    out = []
    for i, item in enumerate(items):
        where = f"tokens[{i}]"
        spec = build(TokenSpec, item, where, problems)
        if spec is None:
            continue
        if not spec.token or len(spec.token) > 512:
            problems.append(f"{where}.token: 1-512 characters")
        out.append(spec)
    return tuple(out)


T = TypeVar("T")


def merge_by_key(defaults: tuple[T, ...], extra: tuple[T, ...], key: str) -> tuple[T, ...]:
    """Defaults, with entries of *extra* replacing those with the same *key* and the rest added."""
    merged = {getattr(item, key): item for item in defaults}
    for item in extra:
        merged[getattr(item, key)] = item
    return tuple(merged.values())


def parse_config(doc: Mapping[str, Any]) -> SimConfig:
    """Build a SimConfig from a TOML-shaped mapping; raise SimConfigError listing all problems.

    Accounts and tokens are added to the defaults (same id or token: replaced) unless
    `replace_defaults = true`.
    """
    problems: list[str] = []
    top_keys = {f.name for f in fields(SimConfig)} | {"replace_defaults"}
    problems.extend(
        f"unknown top-level key {key!r} (known: {', '.join(sorted(top_keys))})"
        for key in doc
        if key not in top_keys
    )
    cfg = SimConfig()
    seed = doc.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"seed: expected an integer, got {seed!r}")
        seed = 0
    versions = {}
    for key in ("default_version", "min_version", "latest_version"):
        value = doc.get(key, getattr(cfg, key))
        if not isinstance(value, str) or not VERSION_RE.match(value):
            problems.append(f"{key}: expected 'vNN.N', got {value!r}")
            value = getattr(cfg, key)
        versions[key] = value
    ordered = [
        version_tuple(versions[k]) for k in ("min_version", "default_version", "latest_version")
    ]
    if ordered != sorted(ordered):
        problems.append("versions: expected min_version <= default_version <= latest_version")
    replace_defaults = bool(doc.get("replace_defaults", False))
    accounts = _accounts(doc.get("accounts", []), problems)
    tokens = _tokens(doc.get("tokens", []), problems)
    if not replace_defaults:
        accounts = merge_by_key(DEFAULT_ACCOUNTS, accounts, "id")
        tokens = merge_by_key(DEFAULT_TOKENS, tokens, "token")
    limits = _object_limits({}, doc.get("object_limits", {}), problems)
    rates = _rate_limits({}, doc.get("rate_limits", {}), problems)
    faults = doc.get("faults", [])
    if not isinstance(faults, list):
        problems.append("faults: expected a list of tables")
        faults = []
    for i, rule in enumerate(faults):
        try:
            parse_rule(rule, default_id=f"faults[{i}]")
        except SimConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SimConfigError(problems)
    return SimConfig(
        seed=seed,
        default_version=versions["default_version"],
        min_version=versions["min_version"],
        latest_version=versions["latest_version"],
        accounts=accounts,
        tokens=tokens,
        object_limits=limits,
        rate_limits=rates,
        faults=tuple(faults),
    )


def _rate_limits(base: Mapping[str, Any], doc: Any, problems: list[str]) -> RateLimits:
    """RateLimits from *base* overlaid with *doc*; problems appended, defaults returned."""
    if not isinstance(doc, Mapping):
        problems.append(f"rate_limits: expected a table, got {doc!r}")
        return RateLimits()
    before = len(problems)
    rates = build(RateLimits, {**base, **doc}, "rate_limits", problems)
    if rates is None:
        return RateLimits()
    if rates.throttle_error not in THROTTLES:
        problems.append(f"rate_limits.throttle_error: one of {sorted(THROTTLES)}")
    problems.extend(
        f"rate_limits.{name}: must be > 0"
        for name in ("max_score", "decay_seconds", "read_cost", "write_cost")
        if getattr(rates, name) <= 0
    )
    if rates.block_seconds < 0:
        problems.append("rate_limits.block_seconds: must be >= 0")
    problems.extend(
        f"rate_limits.{name}: must be >= 1"
        for name in ("mutation_qps", "app_calls_per_hour")
        if getattr(rates, name) < 1
    )
    return rates if len(problems) == before else RateLimits()


def _object_limits(base: Mapping[str, Any], doc: Any, problems: list[str]) -> ObjectLimits:
    if not isinstance(doc, Mapping):
        problems.append(f"object_limits: expected a table, got {doc!r}")
        return ObjectLimits()
    before = len(problems)
    limits = build(ObjectLimits, {**base, **doc}, "object_limits", problems)
    if limits is None:
        return ObjectLimits()
    problems.extend(
        f"object_limits.{f.name}: must be >= 1"
        for f in fields(ObjectLimits)
        if getattr(limits, f.name) < 1
    )
    return limits if len(problems) == before else ObjectLimits()


def update_limits(
    objects: ObjectLimits, rates: RateLimits, doc: Mapping[str, Any]
) -> tuple[ObjectLimits, RateLimits]:
    """Apply a partial control-API update to both; SimConfigError lists every problem."""
    problems: list[str] = []
    new_objects = _object_limits(_fields(objects), doc.get("object_limits", {}), problems)
    new_rates = _rate_limits(_fields(rates), doc.get("rate_limits", {}), problems)
    if problems:
        raise SimConfigError(problems)
    return new_objects, new_rates


def update_rate_limits(current: RateLimits, doc: Mapping[str, Any]) -> RateLimits:
    """*current* with the keys of *doc* changed; SimConfigError lists every problem."""
    return update_limits(ObjectLimits(), current, {"rate_limits": doc})[1]


def update_object_limits(current: ObjectLimits, doc: Mapping[str, Any]) -> ObjectLimits:
    """*current* with the keys of *doc* changed; SimConfigError lists every problem."""
    return update_limits(current, RateLimits(), {"object_limits": doc})[0]


def _fields(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def parse_account(doc: Mapping[str, Any]) -> AccountSpec:
    problems: list[str] = []
    out = _accounts([doc], problems)
    if problems:
        raise SimConfigError(problems)
    return out[0]


def parse_token(doc: Mapping[str, Any]) -> TokenSpec:
    problems: list[str] = []
    out = _tokens([doc], problems)
    if problems:
        raise SimConfigError(problems)
    return out[0]


def load_config(path: Path | None) -> SimConfig:
    """The defaults, or the defaults amended by the TOML file at *path*."""
    if path is None:
        return parse_config({})
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SimConfigError([f"{path}: {exc}"]) from exc
    except OSError as exc:
        raise SimConfigError([f"{path}: {exc.strerror}"]) from exc
    return parse_config(doc)
