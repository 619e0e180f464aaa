"""The circuit breaker's state machine (DESIGN.md §6), after Resilience4j's CircuitBreaker.

Pure: no I/O, no clock, no asyncio. Time comes in as `now` (POSIX seconds, shared by every
replica) and call durations as `duration`; the shell (gateway.breaker) reads the clock, runs the
call and applies these transitions atomically through a store, so the same rules hold whether
the state lives in one process or in Redis (CONVENTIONS.md §2 rule 5).

    CLOSED ── failure rate or slow-call rate ≥ its threshold over the last window_seconds,
    │         once the window holds ≥ minimum_calls ─────────────────────────────────► OPEN
    OPEN ──── open_seconds after opening, at the next admit ──────────────────────► HALF_OPEN
    HALF_OPEN admits at most half_open_probes calls at once (the probes); every other caller
    │         is rejected at once.
    │   ├── a probe fails or is slow; or every slot has been held probe_timeout_seconds
    │   │   with no probe answering (its holder crashed or hung) ──────────────────► OPEN
    │   └── half_open_successes_to_close good probes ──────────────► CLOSED (a fresh window)
    any ───── force("open") ► FORCED_OPEN · force("disable") ► DISABLED · force("reset") ► CLOSED

FORCED_OPEN rejects everything and DISABLED admits everything, both counting nothing, until an
admin forces another state. The state values are pybreaker's names (`STATE_CLOSED`,
`STATE_OPEN`, `STATE_HALF_OPEN`) plus Resilience4j's two admin states.

Every state change starts a new *epoch*. An admission carries its epoch, and an outcome from an
earlier epoch is ignored: a probe that answers after its half-open episode ended (or a call that
ends after the circuit was reset) cannot close, reopen or free a slot of a later episode.

What counts as a failure is the caller's decision (5xx, transport errors and transient Graph
errors; not throttles, not permanent 4xx). A call is slow when it takes slow_call_seconds or
longer, whether it succeeded or failed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

# A caller turned away because every probe slot is taken retries after this long: the probes
# answer within one upstream try, and a success closes the circuit.
HALF_OPEN_RETRY_AFTER_SECONDS = 1.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"
    FORCED_OPEN = "forced-open"
    DISABLED = "disabled"


@dataclass(frozen=True)
class BreakerConfig:
    """The `[breaker]` policy table (policies/breaker.toml)."""

    # The sliding window: outcomes of the last this many seconds, in one-second buckets.
    window_seconds: int = 30
    # Below this many calls in the window the rates are not judged (one failure in two calls
    # is not an outage).
    minimum_calls: int = 20
    # Share of failed calls (0-1] in the window that opens the circuit.
    failure_rate_threshold: float = 0.5
    # A call taking this long or longer is slow (successful or not).
    slow_call_seconds: float = 10.0
    # Share of slow calls (0-1] in the window that opens the circuit.
    slow_call_rate_threshold: float = 0.8
    # How long an opened circuit rejects every call before it lets probes through.
    open_seconds: float = 15.0
    # How many probes may be in flight at once while half-open.
    half_open_probes: int = 3
    # How many good probes (neither failed nor slow) close the circuit again.
    half_open_successes_to_close: int = 3
    # Half-open with every slot held and no probe admitted or answered for this long: the
    # probes are presumed lost (a replica crashed holding them) and the circuit opens again.
    probe_timeout_seconds: float = 60.0

    def problems(self) -> list[str]:
        """What is out of range (the policy check; every problem at once)."""
        out = [
            f"{name}: must be >= 1"
            for name in (
                "window_seconds",
                "minimum_calls",
                "half_open_probes",
                "half_open_successes_to_close",
            )
            if getattr(self, name) < 1
        ]
        out.extend(
            f"{name}: must be > 0 and <= 1"
            for name in ("failure_rate_threshold", "slow_call_rate_threshold")
            if not 0 < getattr(self, name) <= 1
        )
        out.extend(
            f"{name}: must be > 0"
            for name in ("slow_call_seconds", "open_seconds", "probe_timeout_seconds")
            if getattr(self, name) <= 0
        )
        return out


@dataclass(frozen=True)
class Bucket:
    """Outcomes recorded during one second (`second` = floor of POSIX time)."""

    second: int
    calls: int = 0
    failures: int = 0
    slow: int = 0


@dataclass(frozen=True)
class WindowStats:
    calls: int
    failures: int
    slow: int

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return self.slow / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class Admitted:
    """Go ahead. A probe must report back (record or release) with this epoch."""

    probe: bool
    epoch: int


@dataclass(frozen=True)
class Rejected:
    """Fail fast: do not call; try again after `retry_after_seconds`."""

    retry_after_seconds: float
    state: BreakerState


Admission = Admitted | Rejected


@functools.lru_cache(maxsize=16)
def _admitted(epoch: int) -> Admitted:
    """The admission of a call that is no probe: one frozen value per epoch, made once (every
    call through a closed breaker gets one)."""
    return Admitted(probe=False, epoch=epoch)


ForceMode = Literal["open", "disable", "reset"]


@dataclass(frozen=True)
class Breaker:
    """One breaker's state. Shared state: replaced, never mutated; `to_dict()` is its JSON form.

    `config` is not part of the JSON form: the current policy is attached when the state is
    read back (`from_dict`), so a policy reload applies to stored breakers at once.
    """

    config: BreakerConfig = field(default_factory=BreakerConfig)
    state: BreakerState = BreakerState.CLOSED
    epoch: int = 0
    # When the current state was entered (in OPEN and FORCED_OPEN: when the circuit opened).
    since: float = 0.0
    # CLOSED only: the sliding window, oldest first.
    buckets: tuple[Bucket, ...] = ()
    # HALF_OPEN only: probes admitted and not yet answered; good probes so far; when a probe
    # was last admitted or answered (or the state entered), for probe_timeout_seconds.
    probes_in_flight: int = 0
    probe_successes: int = 0
    probe_seen_at: float = 0.0
    # Derived, never stored nor compared: `(buckets, calls, failures, slow)`, the sums over
    # these very buckets (checked by identity, so a `replace()` that swaps the buckets can
    # never reuse them) when all of them were in the window. A busy second's next `record`
    # then adds its call to them instead of summing the whole window again.
    sums: tuple[tuple[Bucket, ...], int, int, int] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def opened_at(self) -> float | None:
        """When the circuit opened, while it is open (OPEN or FORCED_OPEN)."""
        return self.since if self.state in (BreakerState.OPEN, BreakerState.FORCED_OPEN) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "epoch": self.epoch,
            "since": self.since,
            "buckets": [[b.second, b.calls, b.failures, b.slow] for b in self.buckets],
            "probes_in_flight": self.probes_in_flight,
            "probe_successes": self.probe_successes,
            "probe_seen_at": self.probe_seen_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: BreakerConfig | None = None) -> Breaker:
        """The breaker `to_dict()` gave, under *config*. Malformed data raises (Key/Type/
        ValueError): stored state is ours, so damage is a bug, not something to paper over."""
        return cls(
            config=config or BreakerConfig(),
            state=BreakerState(data["state"]),
            epoch=int(data["epoch"]),
            since=float(data["since"]),
            buckets=tuple(Bucket(*(int(n) for n in row)) for row in data["buckets"]),
            probes_in_flight=int(data["probes_in_flight"]),
            probe_successes=int(data["probe_successes"]),
            probe_seen_at=float(data["probe_seen_at"]),
        )


def admit(b: Breaker, now: float) -> tuple[Breaker, Admission]:
    """May a call go ahead now? OPEN past open_seconds becomes HALF_OPEN here."""
    cfg = b.config
    if b.state in (BreakerState.CLOSED, BreakerState.DISABLED):
        return b, _admitted(b.epoch)
    if b.state is BreakerState.FORCED_OPEN:
        return b, Rejected(cfg.open_seconds, BreakerState.FORCED_OPEN)
    if b.state is BreakerState.OPEN:
        wait = b.since + cfg.open_seconds - now
        if wait > 0:
            return b, Rejected(min(wait, cfg.open_seconds), BreakerState.OPEN)
        b = _enter(b, BreakerState.HALF_OPEN, now)
    # HALF_OPEN
    if b.probes_in_flight < cfg.half_open_probes:
        probe = replace(b, probes_in_flight=b.probes_in_flight + 1, probe_seen_at=now)
        return probe, Admitted(probe=True, epoch=b.epoch)
    if now - b.probe_seen_at >= cfg.probe_timeout_seconds:
        return _enter(b, BreakerState.OPEN, now), Rejected(cfg.open_seconds, BreakerState.OPEN)
    return b, Rejected(HALF_OPEN_RETRY_AFTER_SECONDS, BreakerState.HALF_OPEN)


def record(
    b: Breaker,
    *,
    success: bool,
    duration: float,
    now: float,
    probe: bool,
    epoch: int | None = None,
) -> Breaker:
    """The breaker after a call admitted by `admit` ended (`probe`/`epoch` from its Admitted;
    epoch None skips the staleness check). Counted in CLOSED (the window) and HALF_OPEN (the
    probes); ignored in the other states and when the epoch has moved on."""
    if epoch is not None and epoch != b.epoch:
        return b
    cfg = b.config
    slow = duration >= cfg.slow_call_seconds
    if b.state is BreakerState.HALF_OPEN and probe:
        if not success or slow:
            return _enter(b, BreakerState.OPEN, now)
        successes = b.probe_successes + 1
        if successes >= cfg.half_open_successes_to_close:
            return _enter(b, BreakerState.CLOSED, now)
        return replace(
            b,
            probes_in_flight=max(0, b.probes_in_flight - 1),
            probe_successes=successes,
            probe_seen_at=now,
        )
    if b.state is not BreakerState.CLOSED or probe:
        return b
    second = math.floor(now)
    buckets = b.buckets
    failed = not success
    fast = bool(buckets) and (
        buckets[-1].second == second and buckets[0].second > second - cfg.window_seconds
    )
    if fast:
        # The common case (every call in a busy second): only the newest bucket changes, and
        # every bucket is in the window (they are in order and the oldest is), so the window's
        # sums are the previous ones plus this call.
        last = buckets[-1]
        newest = Bucket(second, last.calls + 1, last.failures + failed, last.slow + slow)
        kept = (*buckets[:-1], newest)
        sums = b.sums
        if sums is not None and sums[0] is buckets:
            calls, failures, slows = sums[1] + 1, sums[2] + failed, sums[3] + slow
        else:
            calls, failures, slows = _sum(kept)
    else:
        current = next((x for x in buckets if x.second == second), Bucket(second))
        live = [x for x in buckets if x.second != second and x.second > second - cfg.window_seconds]
        live.append(
            Bucket(second, current.calls + 1, current.failures + failed, current.slow + slow)
        )
        kept = tuple(sorted(live, key=lambda x: x.second))
        calls, failures, slows = _sum(kept)  # all in the window: it ends at this second
    if calls >= cfg.minimum_calls and (
        failures / calls >= cfg.failure_rate_threshold
        or slows / calls >= cfg.slow_call_rate_threshold
    ):
        return _enter(b, BreakerState.OPEN, now)
    sums = (kept, calls, failures, slows)
    if fast:
        # CLOSED carries no probe fields: built directly, the hot path skips replace().
        return Breaker(b.config, b.state, b.epoch, b.since, kept, sums=sums)
    return replace(b, buckets=kept, sums=sums)


def _sum(buckets: tuple[Bucket, ...]) -> tuple[int, int, int]:
    calls = failures = slow = 0
    for x in buckets:
        calls += x.calls
        failures += x.failures
        slow += x.slow
    return calls, failures, slow


def release(b: Breaker, *, now: float, probe: bool, epoch: int | None = None) -> Breaker:
    """The breaker after an admitted call ended with no verdict on the upstream (the caller
    was cancelled, or Graph throttled it): nothing is counted, a probe's slot is freed."""
    if b.state is not BreakerState.HALF_OPEN or not probe or epoch not in (None, b.epoch):
        return b
    return replace(b, probes_in_flight=max(0, b.probes_in_flight - 1), probe_seen_at=now)


_FORCED = {
    "open": BreakerState.FORCED_OPEN,
    "disable": BreakerState.DISABLED,
    "reset": BreakerState.CLOSED,
}


def force(b: Breaker, mode: ForceMode, now: float) -> Breaker:
    """The admin API's override: hold open, stop breaking, or reset to a fresh CLOSED."""
    state = _FORCED.get(mode)
    if state is None:
        raise ValueError(f"force mode must be one of {sorted(_FORCED)}, not {mode!r}")
    return _enter(b, state, now)


def window_stats(b: Breaker, now: float) -> WindowStats:
    """Calls, failures and slow calls in the window ending at *now*."""
    horizon = math.floor(now) - b.config.window_seconds
    live = [x for x in b.buckets if x.second > horizon]
    return WindowStats(
        calls=sum(x.calls for x in live),
        failures=sum(x.failures for x in live),
        slow=sum(x.slow for x in live),
    )


def describe(b: Breaker, now: float) -> dict[str, Any]:
    """The admin API's view of one breaker (JSON)."""
    stats = window_stats(b, now)
    retry_after: float | None = None
    if b.state is BreakerState.OPEN:
        retry_after = max(0.0, min(b.config.open_seconds, b.since + b.config.open_seconds - now))
    elif b.state is BreakerState.FORCED_OPEN:
        retry_after = b.config.open_seconds
    return {
        "state": b.state.value,
        "since": b.since,
        "epoch": b.epoch,
        "calls": stats.calls,
        "failures": stats.failures,
        "slow_calls": stats.slow,
        "failure_rate": stats.failure_rate,
        "slow_call_rate": stats.slow_call_rate,
        "probes_in_flight": b.probes_in_flight,
        "probe_successes": b.probe_successes,
        "retry_after_seconds": retry_after,
    }


def _enter(b: Breaker, state: BreakerState, now: float) -> Breaker:
    """*b* in *state* from *now*: a new epoch, an empty window, no probes."""
    return Breaker(b.config, state, b.epoch + 1, since=now, probe_seen_at=now)
