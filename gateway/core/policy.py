"""Policy documents (TOML tables) parsed into one immutable `PolicySet`.

Pure: takes already-loaded documents, never reads files. Every file carries `version = 1`; a
table may appear in one file only; every problem is reported at once as a `ConfigError`.
`[[examples]]` are not rules: tests evaluate them (tests/policies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.breaker import BreakerConfig
from gateway.core.classify import DEFAULT_RULES, CreateRules
from gateway.core.ratelimit import ThrottlePolicy
from gateway.core.retry import ErrorRules, RetryPolicy
from gateway.core.schema import build
from gateway.core.verify import VerifyPolicy
from gateway.errors import ConfigError

POLICY_VERSION = 1


@dataclass(frozen=True)
class UpstreamPolicy:
    """Timing of calls to Graph (DESIGN.md §3.4: these three keys are the contract)."""

    connect_timeout_seconds: float = 5.0
    # Longest wait for Graph's answer to one attempt; creates on Graph can take seconds.
    per_try_timeout_seconds: float = 30.0
    # The whole request, retries and waits included, never takes longer than this.
    deadline_seconds: float = 60.0


@dataclass(frozen=True)
class ProxyPolicy:
    """The proxy port and its pool of connections to Graph."""

    # Bodies the gateway must read to classify (forms, JSON, batches). Graph's own limit for
    # such calls is far below this; larger ones are refused with 413 before anything is sent.
    max_body_bytes: int = 4 * 1024 * 1024
    # Streamed uploads (adimages, advideos). Graph takes images up to 30 MB and non-resumable
    # videos up to 1 GB.
    max_upload_bytes: int = 1024 * 1024 * 1024
    # Above the SDKs' 5 s idle reuse (Node's agent), so the gateway never closes a connection a
    # client is about to reuse (graph-api-notes Part B §3).
    client_keepalive_seconds: float = 75.0
    # Listen backlog: aiohttp's default of 128 drops connections with 500+ clients.
    backlog: int = 4096
    # Connections to Graph (0 = unlimited), per host likewise, and their idle keep-alive.
    upstream_pool_size: int = 1000
    upstream_pool_per_host: int = 0
    upstream_keepalive_seconds: float = 30.0


@dataclass(frozen=True)
class LedgerPolicy:
    """PostgreSQL pool size (SQLite uses one writer and one reader connection)."""

    pool_min_size: int = 2
    pool_max_size: int = 50


@dataclass(frozen=True)
class ClassificationPolicy:
    """Which calls create entities (DESIGN.md §3.1)."""

    edges: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_RULES.edges))
    copies: bool = True
    batch_max_ops: int = 50

    def rules(self) -> CreateRules:
        return CreateRules(
            edges=dict(self.edges), copies=self.copies, batch_max_ops=self.batch_max_ops
        )


@dataclass(frozen=True)
class IdempotencyPolicy:
    """Idempotency-Key records (DESIGN.md §6)."""

    retention_hours: float = 24.0  # a finished key replays this long, then is reaped
    # How long a key stays held by its request; past it a crashed holder's key can be taken
    # over (after checking the ledger for what it created). Above the upstream deadline.
    lease_seconds: float = 120.0
    # How long a repeat waits for the first request with its key before 409.
    wait_seconds: float = 30.0


@dataclass(frozen=True)
class RecoveryPolicy:
    """The worker that resolves `sending` and `unknown` rows by looking on Graph."""

    interval_seconds: float = 30.0
    # A `sending` row younger than this may still be in flight in some process.
    in_flight_seconds: float = 120.0
    # Graph's created_time has one-second precision and its clock is not ours.
    clock_skew_seconds: float = 5.0
    # An `unknown` row Graph still shows no entity for after this long is `failed`: the
    # create did not happen, and its slot is free again.
    give_up_seconds: float = 600.0
    # Graph may list a fresh entity this late: a create that got no answer is called absent
    # (and sent again, into the same slot) only once its attempt is this old.
    listing_lag_seconds: float = 1.0


@dataclass(frozen=True)
class NotifyPolicy:
    """Job notifications: a job's notify_url gets one POST when it completes, fails or is
    rolled back, from the worker (never on the create path)."""

    # Hosts a notify_url may name (exact, case-insensitive); empty: notifications refused.
    allowed_hosts: tuple[str, ...] = ()
    attempts: int = 5  # POSTs per ending status before giving up (one per worker pass)
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class CapsPolicy:
    """Caps for creates made without a job (zero-change mode); 0 turns a cap off. Counted
    from the ledger (created + in flight), atomically within one gateway process."""

    adsets_per_campaign: int = 0
    ads_per_adset: int = 0


@dataclass(frozen=True)
class PolicySet:
    upstream: UpstreamPolicy = field(default_factory=UpstreamPolicy)
    proxy: ProxyPolicy = field(default_factory=ProxyPolicy)
    ledger: LedgerPolicy = field(default_factory=LedgerPolicy)
    classification: ClassificationPolicy = field(default_factory=ClassificationPolicy)
    verification: VerifyPolicy = field(default_factory=VerifyPolicy)
    idempotency: IdempotencyPolicy = field(default_factory=IdempotencyPolicy)
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    caps: CapsPolicy = field(default_factory=CapsPolicy)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    errors: ErrorRules = field(default_factory=ErrorRules)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    notify: NotifyPolicy = field(default_factory=NotifyPolicy)
    # Every file's [[examples]], by file name, for the policy tests.
    examples: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)


_TABLES: dict[str, type[Any]] = {
    "upstream": UpstreamPolicy,
    "proxy": ProxyPolicy,
    "ledger": LedgerPolicy,
    "classification": ClassificationPolicy,
    "verification": VerifyPolicy,
    "idempotency": IdempotencyPolicy,
    "recovery": RecoveryPolicy,
    "caps": CapsPolicy,
    "retry": RetryPolicy,
    "errors": ErrorRules,
    "breaker": BreakerConfig,
    "throttle": ThrottlePolicy,
    "notify": NotifyPolicy,
}
_ENTITY_TYPES = frozenset({"campaign", "adset", "ad", "adcreative", "adimage", "advideo"})


def parse(documents: Mapping[str, Mapping[str, Any]]) -> PolicySet:
    """One PolicySet from policy documents keyed by file name."""
    problems: list[str] = []
    tables: dict[str, Any] = {}
    seen_in: dict[str, str] = {}
    examples: dict[str, tuple[Mapping[str, Any], ...]] = {}
    for name, doc in sorted(documents.items()):
        version = doc.get("version")
        if type(version) is not int or version != POLICY_VERSION:
            problems.append(f"{name}: version = {POLICY_VERSION} is required")
        for key, value in doc.items():
            if key == "version":
                continue
            if key == "examples":
                if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
                    problems.append(f"{name}: [[examples]] must be tables")
                else:
                    examples[name] = tuple(value)
                continue
            if key not in _TABLES:
                problems.append(
                    f"{name}: unknown table [{key}] (known: {', '.join(sorted(_TABLES))})"
                )
                continue
            if key in seen_in:
                problems.append(f"{name}: [{key}] is already defined in {seen_in[key]}")
                continue
            seen_in[key] = name
            built = build(_TABLES[key], value, f"{name} [{key}]", problems)
            if built is not None:
                tables[key] = built
            # Range checks run on the keys that did parse, so a wrong type in one key does
            # not hide a bad value in another.
            checked = built or _well_typed(_TABLES[key], value)
            if checked is not None:
                problems.extend(f"{name} [{key}] {p}" for p in _check(key, checked))
    policy = PolicySet(**tables, examples=examples)
    deadline = policy.upstream.deadline_seconds
    if policy.idempotency.lease_seconds <= deadline:
        problems.append(
            f"[idempotency] lease_seconds must exceed [upstream] deadline_seconds ({deadline}): "
            "a shorter lease lets a repeat take over a key whose create is still in flight"
        )
    if policy.recovery.in_flight_seconds <= deadline:
        problems.append(
            f"[recovery] in_flight_seconds must exceed [upstream] deadline_seconds ({deadline})"
        )
    if policy.breaker.probe_timeout_seconds <= policy.upstream.per_try_timeout_seconds:
        problems.append(
            "[breaker] probe_timeout_seconds must exceed [upstream] per_try_timeout_seconds "
            f"({policy.upstream.per_try_timeout_seconds}): a probe still waiting for Graph "
            "would be taken for lost"
        )
    if problems:
        raise ConfigError(problems)
    return policy


def _well_typed(cls: type[Any], doc: Any) -> Any:
    """*cls* built from the keys of *doc* that are well typed on their own (defaults elsewhere)."""
    if not isinstance(doc, Mapping):
        return None
    good = {k: v for k, v in doc.items() if build(cls, {k: v}, "", []) is not None}
    return build(cls, good, "", [])


def _check(table: str, value: Any) -> list[str]:
    problems: list[str] = []
    if table == "upstream":
        problems.extend(
            f"{name}: must be > 0"
            for name in ("connect_timeout_seconds", "per_try_timeout_seconds", "deadline_seconds")
            if getattr(value, name) <= 0
        )
        if value.per_try_timeout_seconds > value.deadline_seconds:
            problems.append("per_try_timeout_seconds: must not exceed deadline_seconds")
    elif table == "proxy":
        problems.extend(
            f"{name}: must be >= 1"
            for name in ("max_body_bytes", "max_upload_bytes", "backlog")
            if getattr(value, name) < 1
        )
        problems.extend(
            f"{name}: must be >= 0 (0 = unlimited)"
            for name in ("upstream_pool_size", "upstream_pool_per_host")
            if getattr(value, name) < 0
        )
        if value.client_keepalive_seconds <= 5:
            problems.append("client_keepalive_seconds: must stay above the SDKs' 5 s idle reuse")
    elif table == "ledger":
        if not 1 <= value.pool_min_size <= value.pool_max_size:
            problems.append("pool_min_size/pool_max_size: need 1 <= min <= max")
    elif table == "verification":
        if value.duplicate_name not in ("reject", "warn"):
            problems.append("duplicate_name: 'reject' or 'warn'")
        problems.extend(
            f"limits.{kind}: a positive integer"
            for kind, limit in value.limits.items()
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        )
        if value.attempts < 1 or value.cache_seconds < 0 or value.ads_per_adset < 1:
            problems.append("attempts, ads_per_adset >= 1 and cache_seconds >= 0")
    elif table in ("idempotency", "recovery"):
        problems.extend(
            f"{name}: must be > 0" for name, number in vars(value).items() if number <= 0
        )
    elif table == "caps":
        problems.extend(
            f"{name}: must be >= 0 (0 = no cap)" for name, cap in vars(value).items() if cap < 0
        )
    elif table == "throttle":
        problems.extend(value.problems())
    elif table == "notify":
        if value.attempts < 1:
            problems.append("attempts: must be >= 1")
        if value.timeout_seconds <= 0:
            problems.append("timeout_seconds: must be > 0")
        problems.extend(
            f"allowed_hosts: {host!r} is not a host name"
            for host in value.allowed_hosts
            if not host or "/" in host or ":" in host or " " in host
        )
    elif table == "classification":
        problems.extend(
            f"edges.{edge}: one of {sorted(_ENTITY_TYPES)}"
            for edge, kind in value.edges.items()
            if not isinstance(kind, str) or kind not in _ENTITY_TYPES
        )
        if not 1 <= value.batch_max_ops <= 50:
            problems.append("batch_max_ops: between 1 and Graph's limit of 50")
    elif table in ("retry", "errors", "breaker"):  # tables that check themselves
        problems.extend(value.problems())
    return problems
