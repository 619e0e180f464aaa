"""Fault injection rules: which operations misbehave, how, and when.

Pure: no I/O and no clock. Each rule has its own `random.Random` seeded from the simulator
seed and the rule id, so a run with the same seed, rules and request order fires the same
faults. A rule matches an *operation*: a top-level request, or one op inside a batch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from gateway.sim import errors
from gateway.sim.errors import GraphError
from gateway.sim.schema import SimConfigError, build


class FaultKind(StrEnum):
    ERROR = "error"  # answer an error instead of running the operation
    DROP = "drop_after_commit"  # run it, then close the connection without answering
    STALL = "stall_after_commit"  # run it, then hold the answer for stall_seconds
    SILENT_DROP = "silent_drop"  # answer success but store nothing
    SUSPEND = "suspend_account"  # the ad account is disabled just before this operation
    THROTTLE = "throttle"  # the ad account is throttled for block_seconds from now
    LATENCY = "latency"  # wait before running the operation
    BATCH_NULL = "batch_null"  # a batch op's entry comes back null (run or not: `executed`)


class Distribution(StrEnum):
    FIXED = "fixed"
    UNIFORM = "uniform"
    EXPONENTIAL = "exponential"
    LOGNORMAL = "lognormal"


# Named errors for `kind = "error"` (graph-api-notes Part A §1-§2).
PRESETS: dict[str, Any] = {
    "service_unavailable": lambda: errors.service_unavailable(500),
    "unknown_error": errors.unknown_error,
    "app_limit": errors.app_throttled,
    "mutation_rate": errors.mutation_rate,
    "throttle_80004": lambda: errors.account_throttled("80004"),
    "throttle_17": lambda: errors.account_throttled("17"),
    "throttle_613": lambda: errors.account_throttled("613"),
    "permission": lambda: errors.permission_denied("ads_management", "this account"),
    "invalid_parameter": lambda: errors.invalid_parameter("Invalid parameter"),
}
# Presets whose answer is not Graph JSON.
RAW_PRESETS = {
    "bad_gateway_html": (
        502,
        "text/html",
        "<html><body>Sorry, something went wrong.</body></html>",
    ),
    "empty_500": (500, "application/json", ""),
}
OPS = frozenset({"create", "read", "list", "update", "delete", "copy", "batch", "other"})


@dataclass(frozen=True)
class FaultRule:
    """One fault. Selectors narrow which operations it may hit; counters say which it does."""

    kind: FaultKind
    id: str = ""
    # Selectors: "*" or an op ("create"), optionally with an entity type ("create:adset").
    op: str = "*"
    account: str | None = None  # "act_<n>"
    method: str | None = None
    path: str | None = None  # glob on the path without version, e.g. "act_*/adsets"
    in_batch: bool | None = None  # True: only batch ops; False: only top-level requests
    # When it fires: skip the first `after` matches, then fire with `probability`, `times` max.
    after: int = 0
    probability: float = 1.0
    times: int | None = None
    # kind = error: a preset name, or an explicit Graph error.
    preset: str | None = None
    status: int = 500
    code: int = 2
    subcode: int | None = None
    error_type: str = "OAuthException"
    message: str = "Service temporarily unavailable"
    is_transient: bool | None = True
    # kind = stall_after_commit
    stall_seconds: float = 30.0
    # kind = latency (milliseconds)
    distribution: Distribution = Distribution.FIXED
    latency_ms: float = 0.0
    latency_max_ms: float | None = None
    sigma: float = 0.5
    # kind = batch_null: whether the op ran before its entry was lost
    executed: bool = False
    # kind = throttle
    block_seconds: float = 60.0
    # kind = suspend_account
    account_status: int = 2
    disable_reason: int = 1

    def error(self) -> GraphError:
        if self.preset is not None:
            made: GraphError = PRESETS[self.preset]()
            return made
        return GraphError(
            self.status,
            self.code,
            self.message,
            type=self.error_type,
            subcode=self.subcode,
            is_transient=self.is_transient,
        )

    def raw_error(self) -> tuple[int, str, str] | None:
        """(status, content type, body) for presets that are not Graph JSON."""
        return RAW_PRESETS.get(self.preset or "")

    def matches(self, op: Operation) -> bool:
        if self.op != "*":
            if ":" in self.op:
                if self.op != op.label:
                    return False
            elif self.op != op.op:
                return False
        if self.account is not None and self.account != op.account:
            return False
        if self.method is not None and self.method.upper() != op.method:
            return False
        if self.path is not None and not fnmatchcase(op.path, self.path):
            return False
        return self.in_batch is None or self.in_batch == op.in_batch

    def sample_latency(self, rng: random.Random) -> float:
        """Seconds to wait."""
        ms = self.latency_ms
        match self.distribution:
            case Distribution.UNIFORM:
                ms = rng.uniform(self.latency_ms, self.latency_max_ms or self.latency_ms)
            case Distribution.EXPONENTIAL:
                ms = rng.expovariate(1.0 / self.latency_ms) if self.latency_ms > 0 else 0.0
            case Distribution.LOGNORMAL:
                ms = math.exp(rng.gauss(math.log(max(self.latency_ms, 1e-3)), self.sigma))
            case Distribution.FIXED:
                pass
        if self.latency_max_ms is not None:
            ms = min(ms, self.latency_max_ms)
        return max(0.0, ms) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Operation:
    """What a fault rule is matched against."""

    op: str  # one of OPS
    entity: str | None  # "campaign", "adset", ... where it applies
    method: str
    path: str  # without version or leading slash
    account: str | None  # "act_<n>"
    in_batch: bool

    @property
    def label(self) -> str:
        return f"{self.op}:{self.entity}" if self.entity else self.op


def parse_rule(doc: Any, *, default_id: str) -> FaultRule:
    """A FaultRule from its TOML / JSON form; SimConfigError lists every problem."""
    problems: list[str] = []
    raw: Mapping[str, Any] = doc if isinstance(doc, Mapping) else {}
    where = f"fault {raw.get('id') or default_id}"
    rule = build(FaultRule, doc, where, problems)
    # Checked on the raw values, so they are listed even when the rule has other errors.
    op = raw.get("op", "*")
    if isinstance(op, str) and op != "*" and op.split(":", 1)[0] not in OPS:
        problems.append(f"{where}.op: '*' or one of {sorted(OPS)} (optionally ':<entity>')")
    probability = raw.get("probability", 1.0)
    if isinstance(probability, int | float) and not 0.0 <= probability <= 1.0:
        problems.append(f"{where}.probability: between 0 and 1")
    preset = raw.get("preset")
    if isinstance(preset, str) and preset not in PRESETS and preset not in RAW_PRESETS:
        problems.append(f"{where}.preset: one of {sorted(PRESETS) + sorted(RAW_PRESETS)}")
    problems.extend(
        f"{where}.{name}: must be >= 0"
        for name in ("after", "times", "stall_seconds", "latency_ms", "block_seconds")
        if isinstance(raw.get(name), int | float) and raw[name] < 0
    )
    if problems or rule is None:
        raise SimConfigError(problems)
    return rule if rule.id else replace(rule, id=default_id)


@dataclass
class RuleState:
    rule: FaultRule
    rng: random.Random
    matched: int = 0
    fired: int = 0


class FaultBook:
    """The active fault rules and their counters."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._states: dict[str, RuleState] = {}
        self._serial = 0

    def add(self, doc: Mapping[str, Any]) -> FaultRule:
        self._serial += 1
        rule = parse_rule(doc, default_id=f"f{self._serial}")
        if rule.id in self._states:
            raise SimConfigError([f"fault {rule.id}: id already in use"])
        self._states[rule.id] = RuleState(rule, random.Random(f"{self.seed}/{rule.id}"))
        return rule

    def remove(self, rule_id: str) -> bool:
        return self._states.pop(rule_id, None) is not None

    def clear(self) -> None:
        self._states.clear()

    def fire(self, op: Operation) -> list[tuple[FaultRule, random.Random]]:
        """The rules that fire for *op*, in the order they were added (counts them)."""
        out = []
        for state in self._states.values():
            rule = state.rule
            if not rule.matches(op):
                continue
            state.matched += 1
            if state.matched <= rule.after:
                continue
            if rule.times is not None and state.fired >= rule.times:
                continue
            if rule.probability < 1.0 and state.rng.random() >= rule.probability:
                continue
            state.fired += 1
            out.append((rule, state.rng))
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            s.rule.to_dict() | {"matched": s.matched, "fired": s.fired}
            for s in self._states.values()
        ]
