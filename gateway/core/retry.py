"""Whether a failed call to Graph may be tried again, when, and whether the budget allows it.

Pure: no I/O, no clock, no randomness: `now`, elapsed time and `jitter` are arguments.
Classification reads Graph's `code`, `error_subcode`, `is_transient`, the HTTP status and the
transport failure, never the message text (graph-api-notes §1.1: Meta rewords messages).

    ErrorClass.THROTTLE   wait (regain time / usage headers), never retried in place
    ErrorClass.TRANSIENT  reads are retried with backoff; creates are reconciled, not re-sent
    ErrorClass.PERMANENT  never retried
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any


class ErrorClass(StrEnum):
    THROTTLE = "throttle"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class Transport(StrEnum):
    """A failure with no usable Graph answer, as the upstream adapter reports it."""

    CONNECT = "connect"  # no connection was made: nothing reached Graph
    TIMEOUT = "timeout"  # sent, no answer in time: the outcome is unknown
    RESET = "reset"  # the connection dropped mid-exchange: the outcome is unknown
    NOT_JSON = "not_json"  # an answer whose body is not JSON (an edge's HTML 502, an empty 500)


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class ErrorRule:
    """One compiled `[errors] rules` entry. Every condition given must hold; an empty one is
    "any". Codes and code ranges are one condition: the code is in the list or a range."""

    error_class: ErrorClass
    codes: frozenset[int] = frozenset()
    code_ranges: tuple[tuple[int, int], ...] = ()
    subcodes: frozenset[int] = frozenset()
    http_status: tuple[tuple[int, int], ...] = ()
    is_transient: bool | None = None  # must equal the error's flag; an absent flag matches neither
    transport: frozenset[Transport] = frozenset()

    def matches(
        self,
        *,
        code: int | None,
        subcode: int | None,
        is_transient: bool | None,
        status: int | None,
        transport: Transport | None,
    ) -> bool:
        if (self.codes or self.code_ranges) and not (
            code is not None and (code in self.codes or _within(code, self.code_ranges))
        ):
            return False
        if self.subcodes and subcode not in self.subcodes:
            return False
        if self.http_status and not (status is not None and _within(status, self.http_status)):
            return False
        if self.is_transient is not None and is_transient is not self.is_transient:
            return False
        return not self.transport or transport in self.transport


def _within(number: int, ranges: Iterable[tuple[int, int]]) -> bool:
    return any(low <= number <= high for low, high in ranges)


# The shipped policies/retry.toml rules, so that a PolicySet built without files classifies
# the same way (tests/policies checks the two agree). Order matters: the first match wins.
DEFAULT_ERROR_RULES: tuple[Mapping[str, Any], ...] = (
    {"class": "permanent", "codes": [17], "subcodes": [1885172]},
    {"class": "permanent", "codes": [613], "subcodes": [1487632, 1487225]},
    {"class": "permanent", "codes": [2], "subcodes": [1504038]},
    {"class": "permanent", "codes": [100], "subcodes": [1504018]},
    {"class": "permanent", "codes": [368, 1404078, 2859015, 1404163]},
    {"class": "throttle", "codes": [4, 17, 32, 613]},
    {
        "class": "throttle",
        "codes": [80000, 80001, 80002, 80003, 80004, 80005, 80006, 80008, 80009, 80014],
    },
    {"class": "transient", "codes": [1, 2, 341, 3910001]},
    {"class": "transient", "codes": [-2], "subcodes": [2490547]},
    {"class": "transient", "is_transient": True},
    {"class": "permanent", "codes": [3, 10, 100, 102, 104, 190, 803, 2500, 2635]},
    {"class": "permanent", "code_ranges": [[200, 299]]},
    {"class": "transient", "transport": ["connect", "timeout", "reset"]},
    {"class": "transient", "transport": ["not_json"], "http_status": [[500, 599]]},
    {"class": "throttle", "http_status": [[429, 429]]},
    {"class": "transient", "http_status": [[500, 599]]},
)

_RULE_KEYS = frozenset(
    {"class", "codes", "code_ranges", "subcodes", "http_status", "is_transient", "transport"}
)


@dataclass(frozen=True)
class ErrorRules:
    """The [errors] policy table: `rules` as written (a list of tables, first match wins) and
    the classes for failures no rule matches. The parser checks the rules (`problems`);
    `compiled` is their typed form, built once on first use."""

    rules: tuple[Mapping[str, Any], ...] = DEFAULT_ERROR_RULES
    # A Graph error no rule matches: an unknown code is more likely a new validation or
    # permission error than an outage, and retrying a refusal only spends rate limit.
    default: ErrorClass = ErrorClass.PERMANENT
    # No rule matched and there is no Graph error object: no answer at all, or a 5xx whose body
    # is not Graph's envelope. Graph did not refuse anything, so the outcome is unknown.
    default_server_error: ErrorClass = ErrorClass.TRANSIENT

    def problems(self) -> list[str]:
        return _compile(self.rules)[1]

    @cached_property
    def compiled(self) -> tuple[ErrorRule, ...]:
        rules, problems = _compile(self.rules)
        if problems:
            raise ValueError("; ".join(problems))
        return rules


def _ints(value: Any) -> tuple[int, ...] | None:
    ok = isinstance(value, list | tuple) and value
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    return tuple(value)


def _ranges(value: Any) -> tuple[tuple[int, int], ...] | None:
    if not isinstance(value, list | tuple) or not value:
        return None
    pairs = []
    for item in value:
        pair = _ints(item)
        if pair is None or len(pair) != 2 or pair[0] > pair[1]:
            return None
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _compile(docs: Sequence[Any]) -> tuple[tuple[ErrorRule, ...], list[str]]:
    rules: list[ErrorRule] = []
    problems: list[str] = []
    for i, doc in enumerate(docs):
        where = f"rules[{i}]"
        if not isinstance(doc, Mapping):
            problems.append(f"{where}: expected a table, got {doc!r}")
            continue
        before = len(problems)
        problems.extend(
            f"{where}: unknown key {key!r} (known: {', '.join(sorted(_RULE_KEYS))})"
            for key in doc
            if key not in _RULE_KEYS
        )
        if doc.get("class") not in tuple(ErrorClass):
            problems.append(f"{where}.class: one of {', '.join(c.value for c in ErrorClass)}")
        if not _RULE_KEYS.difference({"class"}).intersection(doc):
            problems.append(
                f"{where}: has no condition, so it would match everything (use default)"
            )
        ints = {key: _ints(doc[key]) for key in ("codes", "subcodes") if key in doc}
        problems.extend(
            f"{where}.{k}: a non-empty list of integers" for k, v in ints.items() if v is None
        )
        ranges = {key: _ranges(doc[key]) for key in ("code_ranges", "http_status") if key in doc}
        problems.extend(
            f"{where}.{k}: a non-empty list of [low, high] integer pairs, low <= high"
            for k, v in ranges.items()
            if v is None
        )
        flag = doc.get("is_transient")
        if "is_transient" in doc and not isinstance(flag, bool):
            problems.append(f"{where}.is_transient: true or false")
        transports = doc.get("transport", [])
        known = tuple(Transport)
        if "transport" in doc and (
            not isinstance(transports, list | tuple)
            or not transports
            or any(t not in known for t in transports)
        ):
            problems.append(f"{where}.transport: a non-empty list of {', '.join(known)}")
        if len(problems) > before:
            continue
        rules.append(
            ErrorRule(
                error_class=ErrorClass(doc["class"]),
                codes=frozenset(ints.get("codes") or ()),
                code_ranges=ranges.get("code_ranges") or (),
                subcodes=frozenset(ints.get("subcodes") or ()),
                http_status=ranges.get("http_status") or (),
                is_transient=flag,
                transport=frozenset(Transport(t) for t in transports),
            )
        )
    return tuple(rules), problems


def graph_error(body: Any) -> Mapping[str, Any] | None:
    """The `error` object of Graph's envelope in a parsed JSON body, or None."""
    error = body.get("error") if isinstance(body, Mapping) else None
    return error if isinstance(error, Mapping) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def classify_error(
    rules: ErrorRules,
    *,
    status: int | None,
    error: Mapping[str, Any] | None,
    transport: str | None = None,
) -> ErrorClass:
    """The retry class of one failed call.

    *status* is the HTTP status (None when there was no answer), *error* the `error` object of
    Graph's envelope (see `graph_error`; None when the body carried none), *transport* a
    `Transport` value when the failure was below Graph's JSON. Raises ValueError for an unknown
    transport or when all three are None (nothing failed that could be classified).
    """
    kind = None if transport is None else Transport(transport)
    if status is None and error is None and kind is None:
        raise ValueError("nothing to classify: no status, no Graph error and no transport failure")
    code = subcode = flag = None
    if error is not None:
        code, subcode = _int(error.get("code")), _int(error.get("error_subcode"))
        flag = error.get("is_transient") if isinstance(error.get("is_transient"), bool) else None
    for rule in rules.compiled:
        if rule.matches(
            code=code, subcode=subcode, is_transient=flag, status=status, transport=kind
        ):
            return rule.error_class
    if error is None and (status is None or status >= 500):
        return rules.default_server_error
    return rules.default


# --------------------------------------------------------------------------- backoff


@dataclass(frozen=True)
class RetryPolicy:
    """The [retry] policy table: backoff per request and the retry budget across requests."""

    # Tries per request, the first included. Each waits up to cap_seconds, all inside
    # [upstream] deadline_seconds.
    attempts: int = 3
    base_seconds: float = 0.5  # the first retry waits up to this long
    cap_seconds: float = 10.0  # no backoff wait is longer (a Retry-After or regain time may be)
    # Linkerd-style budget: retries in the window stay below this share of requests...
    budget_ratio: float = 0.2
    budget_window_seconds: int = 10
    # ...or below this many per second of the window, whichever allows more, so that a
    # quiet gateway can still retry.
    budget_min_retries_per_second: float = 1.0
    # A read of an entity created this recently that Graph says does not exist (100/33) is
    # asked again: Graph's read replicas lag behind its writes.
    read_after_write_seconds: float = 30.0
    # A create whose outcome is unknown is looked up on Graph within the request, and sent
    # again (same slot) when Graph shows it did not happen. Off: the caller gets 504
    # outcome_unknown at once and only the recovery worker resolves it.
    reconcile_creates: bool = True

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.attempts < 1:
            problems.append("attempts: must be >= 1 (the first try counts)")
        if self.base_seconds <= 0:
            problems.append("base_seconds: must be > 0")
        if self.cap_seconds < self.base_seconds:
            problems.append("cap_seconds: must be >= base_seconds")
        if not 0 <= self.budget_ratio <= 1:
            problems.append("budget_ratio: between 0 and 1")
        if self.budget_window_seconds < 1:
            problems.append("budget_window_seconds: must be >= 1")
        if self.budget_min_retries_per_second < 0:
            problems.append("budget_min_retries_per_second: must be >= 0")
        if self.read_after_write_seconds < 0:
            problems.append("read_after_write_seconds: must be >= 0")
        return problems


def max_delay(attempt: int, policy: RetryPolicy) -> float:
    """The backoff ceiling after failed try number *attempt* (1-based): base doubled per try,
    capped. Non-decreasing in *attempt*."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    # The exponent is clamped so that a huge attempt number saturates at the cap instead of
    # overflowing a float.
    return min(policy.cap_seconds, policy.base_seconds * 2.0 ** min(attempt - 1, 1023))


def next_delay(
    attempt: int, policy: RetryPolicy, *, jitter: float, retry_after: float | None = None
) -> float:
    """Seconds to wait after failed try number *attempt* (1-based): full jitter (AWS's
    "Exponential Backoff and Jitter"), `jitter * max_delay`, with *jitter* drawn by the caller
    from [0, 1). A Retry-After or Graph regain time, when given, is a floor: waking earlier
    would only be refused again, and calls made while blocked extend Graph's block."""
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    delay = jitter * max_delay(attempt, policy)
    return delay if retry_after is None else max(delay, retry_after)


def should_retry(
    attempt: int, policy: RetryPolicy, *, elapsed: float, deadline: float, delay: float
) -> bool:
    """Whether to try again after failed try number *attempt*: tries are left and the wait
    ends before the request's deadline (*elapsed* and *deadline* in seconds since the request
    arrived). Waking exactly at the deadline leaves no time to try, so that is a no."""
    return attempt < policy.attempts and elapsed + delay < deadline


# --------------------------------------------------------------------------- retry budget


@dataclass(frozen=True)
class BudgetBucket:
    second: int  # floor(now) of the calls counted here
    requests: int = 0
    retries: int = 0


@dataclass(frozen=True)
class BudgetState:
    """Requests and retries per second over the last `window_seconds` (oldest first; seconds
    without traffic have no bucket). JSON-able, so a coordinator can share one across replicas
    (then `now` must come from a clock they share, such as epoch seconds)."""

    window_seconds: int = 10
    buckets: tuple[BudgetBucket, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_seconds": self.window_seconds,
            "buckets": [[b.second, b.requests, b.retries] for b in self.buckets],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> BudgetState:
        """The state `to_dict` wrote; ValueError for anything else."""
        window = _int(doc.get("window_seconds"))
        rows = doc.get("buckets")
        if window is None or window < 1 or not isinstance(rows, list):
            raise ValueError(f"not a retry budget state: {doc!r}")
        buckets = []
        for row in rows:
            numbers = _ints(row)
            if numbers is None or len(numbers) != 3 or min(numbers[1:]) < 0:
                raise ValueError(f"not a retry budget bucket: {row!r}")
            buckets.append(BudgetBucket(*numbers))
        return cls(window, tuple(sorted(buckets, key=lambda b: b.second)))


def _count(
    state: BudgetState, now: float, window: int, *, requests: int = 0, retries: int = 0
) -> BudgetState:
    """*state* with buckets older than *window* dropped and the counts added at *now*."""
    second = math.floor(now)
    buckets = state.buckets
    if (
        buckets
        and buckets[-1].second == second
        and buckets[0].second > second - window
        and state.window_seconds == window
    ):
        # The common case (every call in a busy second): only the newest bucket changes.
        last = buckets[-1]
        if not (requests or retries):
            return state
        newest = BudgetBucket(second, last.requests + requests, last.retries + retries)
        return BudgetState(window, (*buckets[:-1], newest))
    counts = {
        b.second: (b.requests, b.retries) for b in state.buckets if b.second > second - window
    }
    if requests or retries:
        old_requests, old_retries = counts.get(second, (0, 0))
        counts[second] = (old_requests + requests, old_retries + retries)
    return BudgetState(window, tuple(BudgetBucket(s, *counts[s]) for s in sorted(counts)))


def record_request(state: BudgetState, now: float, count: int = 1) -> BudgetState:
    """*state* counting *count* more requests at *now*: once per request, not per try."""
    return _count(state, now, state.window_seconds, requests=count)


# Float slack for the allowance: 0.29 * 100 is 28.999999999999996, which must still allow 29.
_EPSILON = 1e-9


def try_retry(state: BudgetState, now: float, policy: RetryPolicy) -> tuple[BudgetState, bool]:
    """Whether one more retry fits the budget at *now*, and the state counting it if so.

    Allowed when retries in the window + 1 <= max(floor * window, ratio * requests in the
    window). The window is the policy's (a reloaded policy takes effect here). A refusal
    still returns the state with old buckets dropped.
    """
    window = policy.budget_window_seconds
    state = _count(state, now, window)
    requests = sum(b.requests for b in state.buckets)
    retries = sum(b.retries for b in state.buckets)
    allowance = max(policy.budget_min_retries_per_second * window, policy.budget_ratio * requests)
    if retries + 1 > allowance + _EPSILON:
        return state, False
    return _count(state, now, window, retries=1), True
