"""gateway.core.breaker: the circuit breaker's state machine, pure.

Time is a number passed in (`now`, POSIX seconds); durations likewise. Most tests use a small
config (window 10 s, 4 calls minimum, 2 probes, 3 good probes to close) so a handful of calls
reaches every rule.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.core.breaker import (
    HALF_OPEN_RETRY_AFTER_SECONDS,
    Admitted,
    Breaker,
    BreakerConfig,
    BreakerState,
    Bucket,
    Rejected,
    WindowStats,
    admit,
    describe,
    force,
    record,
    release,
    window_stats,
)
from gateway.core.policy import POLICY_VERSION, PolicySet, parse
from gateway.errors import ConfigError

CFG = BreakerConfig(
    window_seconds=10,
    minimum_calls=4,
    failure_rate_threshold=0.5,
    slow_call_seconds=5.0,
    slow_call_rate_threshold=0.75,
    open_seconds=15.0,
    half_open_probes=2,
    half_open_successes_to_close=3,
    probe_timeout_seconds=60.0,
)
T0 = 1_700_000_000.0
FAST = 0.1
SLOW = 5.0  # exactly slow_call_seconds: slow


def calls(b: Breaker, outcomes: str, now: float = T0) -> Breaker:
    """Record one call per letter: 'o' ok, 'x' failed, 's' slow ok, 'X' slow failed."""
    for letter in outcomes:
        b = record(
            b,
            success=letter in "os",
            duration=SLOW if letter in "sX" else FAST,
            now=now,
            probe=False,
        )
    return b


def opened(now: float = T0) -> Breaker:
    b = calls(Breaker(CFG), "xxxx", now)
    assert b.state is BreakerState.OPEN
    return b


def half_open(now: float = T0) -> tuple[Breaker, float]:
    """A breaker just turned HALF_OPEN (no probe admitted yet) and the time it did."""
    at = now + CFG.open_seconds
    return Breaker(CFG, BreakerState.HALF_OPEN, epoch=2, since=at, probe_seen_at=at), at


class TestClosed:
    def test_a_new_breaker_is_closed_and_admits(self) -> None:
        b = Breaker(CFG)
        assert admit(b, T0) == (b, Admitted(probe=False, epoch=0))
        assert b.opened_at is None

    def test_below_the_minimum_volume_even_all_failures_do_not_open(self) -> None:
        b = calls(Breaker(CFG), "xxx")
        assert b.state is BreakerState.CLOSED
        assert window_stats(b, T0) == WindowStats(calls=3, failures=3, slow=0)

    def test_at_the_minimum_volume_a_failure_rate_at_the_threshold_opens(self) -> None:
        b = calls(Breaker(CFG), "oxox")
        assert b.state is BreakerState.OPEN
        assert b.opened_at == T0
        assert b.buckets == ()
        assert b.epoch == 1

    def test_a_failure_rate_below_the_threshold_stays_closed(self) -> None:
        b = calls(Breaker(CFG), "ooxox")
        assert b.state is BreakerState.CLOSED
        assert window_stats(b, T0).failure_rate == pytest.approx(0.4)

    def test_a_success_can_complete_the_volume_that_opens_it(self) -> None:
        b = calls(Breaker(CFG), "xx")
        b = calls(b, "o")
        assert b.state is BreakerState.CLOSED
        b = calls(b, "o")
        assert b.state is BreakerState.OPEN

    def test_slow_calls_open_it_at_the_slow_call_rate_even_when_they_succeed(self) -> None:
        b = calls(Breaker(CFG), "sss")
        assert b.state is BreakerState.CLOSED
        b = calls(b, "o")
        assert b.state is BreakerState.OPEN  # 3 of 4 slow = 0.75

    def test_a_call_just_under_slow_call_seconds_is_not_slow(self) -> None:
        b = record(Breaker(CFG), success=True, duration=4.999, now=T0, probe=False)
        assert window_stats(b, T0).slow == 0

    def test_a_slow_failure_counts_as_failed_and_slow(self) -> None:
        b = calls(Breaker(CFG), "X")
        assert window_stats(b, T0) == WindowStats(calls=1, failures=1, slow=1)

    def test_calls_in_one_second_share_a_bucket(self) -> None:
        b = calls(Breaker(CFG), "oxs", T0 + 0.2)
        b = calls(b, "o", T0 + 0.9)
        assert b.buckets == (Bucket(int(T0), calls=4, failures=1, slow=1),)

    def test_the_window_slides_old_failures_are_forgotten(self) -> None:
        b = calls(Breaker(CFG), "xxx", T0)
        later = T0 + CFG.window_seconds  # T0's bucket has just left the window
        assert window_stats(b, later) == WindowStats(0, 0, 0)
        b = calls(b, "x", later)
        assert b.state is BreakerState.CLOSED
        assert b.buckets == (Bucket(int(later), 1, 1, 0),)

    def test_the_last_second_of_the_window_still_counts(self) -> None:
        b = calls(Breaker(CFG), "xxx", T0)
        b = calls(b, "x", T0 + CFG.window_seconds - 1)
        assert b.state is BreakerState.OPEN

    def test_a_clock_that_steps_back_files_the_call_in_order(self) -> None:
        """Replicas' clocks differ a little: a call recorded 'earlier' keeps buckets sorted."""
        b = calls(Breaker(CFG), "o", T0 + 2)
        b = calls(b, "x", T0)
        assert [x.second for x in b.buckets] == [int(T0), int(T0) + 2]

    def test_a_probe_outcome_while_closed_is_ignored(self) -> None:
        b = Breaker(CFG)
        assert record(b, success=False, duration=FAST, now=T0, probe=True) == b


class TestOpen:
    def test_every_call_is_rejected_until_open_seconds_have_passed(self) -> None:
        b = opened()
        assert admit(b, T0) == (b, Rejected(15.0, BreakerState.OPEN))
        assert admit(b, T0 + 10) == (b, Rejected(5.0, BreakerState.OPEN))

    def test_retry_after_never_exceeds_open_seconds_when_the_clock_steps_back(self) -> None:
        assert admit(opened(), T0 - 5)[1] == Rejected(15.0, BreakerState.OPEN)

    def test_after_open_seconds_the_next_call_is_a_half_open_probe(self) -> None:
        b, decision = admit(opened(), T0 + 15)
        assert decision == Admitted(probe=True, epoch=2)
        assert b.state is BreakerState.HALF_OPEN
        assert b.probes_in_flight == 1
        assert b.since == T0 + 15

    def test_outcomes_of_calls_admitted_before_it_opened_are_ignored(self) -> None:
        b = opened()
        assert record(b, success=False, duration=FAST, now=T0, probe=False) == b
        assert record(b, success=True, duration=FAST, now=T0, probe=False, epoch=0) == b


class TestHalfOpen:
    def test_only_half_open_probes_are_admitted_while_many_callers_wait(self) -> None:
        b = opened()
        decisions = []
        for _ in range(50):
            b, decision = admit(b, T0 + 15)
            decisions.append(decision)
        admitted = [d for d in decisions if isinstance(d, Admitted)]
        assert admitted == [Admitted(probe=True, epoch=2)] * CFG.half_open_probes
        assert decisions[2:] == [
            Rejected(HALF_OPEN_RETRY_AFTER_SECONDS, BreakerState.HALF_OPEN)
        ] * (50 - CFG.half_open_probes)
        assert b.probes_in_flight == CFG.half_open_probes

    @pytest.mark.parametrize(
        ("success", "duration"), [(False, FAST), (True, SLOW)], ids=["failed", "slow"]
    )
    def test_a_failed_or_slow_probe_opens_it_again(self, success: bool, duration: float) -> None:
        b, at = half_open()
        b, ticket = admit(b, at)
        assert isinstance(ticket, Admitted)
        b = record(b, success=success, duration=duration, now=at + 1, probe=True, epoch=2)
        assert b.state is BreakerState.OPEN
        assert b.opened_at == at + 1
        assert admit(b, at + 1)[1] == Rejected(15.0, BreakerState.OPEN)

    def test_enough_good_probes_close_it_with_a_fresh_window(self) -> None:
        b, at = half_open()
        for n in range(3):
            b, ticket = admit(b, at + n)
            assert ticket == Admitted(probe=True, epoch=2)
            b = record(b, success=True, duration=FAST, now=at + n, probe=True, epoch=2)
        assert b.state is BreakerState.CLOSED
        assert b.buckets == ()
        assert b.epoch == 3
        assert b.probes_in_flight == b.probe_successes == 0

    def test_a_good_probe_frees_its_slot_for_the_next(self) -> None:
        b, at = half_open()
        b, _ = admit(b, at)
        b, _ = admit(b, at)
        assert isinstance(admit(b, at)[1], Rejected)
        b = record(b, success=True, duration=FAST, now=at + 1, probe=True, epoch=2)
        assert (b.probes_in_flight, b.probe_successes, b.probe_seen_at) == (1, 1, at + 1)
        assert admit(b, at + 1)[1] == Admitted(probe=True, epoch=2)

    def test_a_probe_from_an_earlier_episode_counts_for_nothing(self) -> None:
        """A probe that answers after its half-open episode ended (slow, reopened, half-open
        again) must not close the new episode or free one of its slots."""
        b, at = half_open()
        b, _ = admit(b, at)
        assert record(b, success=True, duration=FAST, now=at, probe=True, epoch=1) == b
        assert release(b, now=at, probe=True, epoch=1) == b

    def test_a_non_probe_outcome_while_half_open_is_ignored(self) -> None:
        b, at = half_open()
        b, _ = admit(b, at)
        assert record(b, success=False, duration=FAST, now=at, probe=False) == b

    def test_a_probe_without_an_epoch_still_counts(self) -> None:
        b, at = half_open()
        b, _ = admit(b, at)
        b = record(b, success=False, duration=FAST, now=at, probe=True)
        assert b.state is BreakerState.OPEN

    def test_probe_slots_held_past_probe_timeout_are_presumed_lost_and_it_reopens(self) -> None:
        b, at = half_open()
        b, _ = admit(b, at)
        b, _ = admit(b, at + 1)
        assert admit(b, at + 60)[1] == Rejected(
            HALF_OPEN_RETRY_AFTER_SECONDS, BreakerState.HALF_OPEN
        )
        b, decision = admit(b, at + 61)
        assert decision == Rejected(15.0, BreakerState.OPEN)
        assert (b.state, b.since, b.probes_in_flight) == (BreakerState.OPEN, at + 61, 0)

    def test_a_released_probe_frees_its_slot_without_counting(self) -> None:
        b, at = half_open()
        b, _ = admit(b, at)
        b, _ = admit(b, at)
        b = release(b, now=at + 2, probe=True, epoch=2)
        assert (b.probes_in_flight, b.probe_successes, b.probe_seen_at) == (1, 0, at + 2)
        assert release(b, now=at, probe=True).probes_in_flight == 0

    def test_a_release_counts_nothing_outside_half_open_or_for_a_non_probe(self) -> None:
        b = calls(Breaker(CFG), "xx")
        assert release(b, now=T0, probe=False) == b
        assert release(b, now=T0, probe=True) == b
        h, at = half_open()
        h, _ = admit(h, at)
        assert release(h, now=at, probe=False) == h


class TestForce:
    @pytest.mark.parametrize(
        "start", [Breaker(CFG), opened(), half_open()[0]], ids=["closed", "open", "half-open"]
    )
    def test_forced_open_rejects_everything_and_counts_nothing(self, start: Breaker) -> None:
        b = force(start, "open", T0 + 1)
        assert (b.state, b.opened_at, b.epoch) == (
            BreakerState.FORCED_OPEN,
            T0 + 1,
            start.epoch + 1,
        )
        assert admit(b, T0 + 1000) == (b, Rejected(15.0, BreakerState.FORCED_OPEN))
        assert record(b, success=True, duration=FAST, now=T0, probe=False) == b

    def test_disabled_admits_everything_and_never_opens(self) -> None:
        b = force(opened(), "disable", T0)
        assert admit(b, T0) == (b, Admitted(probe=False, epoch=b.epoch))
        assert calls(b, "xxxxxxxx") == b
        assert b.opened_at is None

    def test_reset_gives_a_fresh_closed_breaker_from_any_state(self) -> None:
        for start in (calls(Breaker(CFG), "xx"), opened(), force(Breaker(CFG), "open", T0)):
            b = force(start, "reset", T0 + 3)
            assert b == Breaker(CFG, BreakerState.CLOSED, start.epoch + 1, T0 + 3, (), 0, 0, T0 + 3)

    def test_an_unknown_mode_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="force mode must be one of"):
            force(Breaker(CFG), "close", T0)  # type: ignore[arg-type]


class TestJsonForm:
    @pytest.mark.parametrize(
        "b",
        [
            Breaker(CFG),
            calls(Breaker(CFG), "oxsX", T0 + 0.5),
            opened(),
            admit(half_open()[0], T0 + 15)[0],
            force(Breaker(CFG), "open", T0),
        ],
        ids=["new", "window", "open", "half-open", "forced"],
    )
    def test_the_json_form_round_trips(self, b: Breaker) -> None:
        text = json.dumps(b.to_dict())
        assert Breaker.from_dict(json.loads(text), CFG) == b

    def test_the_config_is_not_stored_but_attached_when_read(self) -> None:
        data = Breaker(CFG).to_dict()
        assert "config" not in data
        assert Breaker.from_dict(data).config == BreakerConfig()

    def test_the_json_form_is_plain_data(self) -> None:
        b = calls(Breaker(CFG), "ox", T0)
        assert b.to_dict() == {
            "state": "closed",
            "epoch": 0,
            "since": 0.0,
            "buckets": [[int(T0), 2, 1, 0]],
            "probes_in_flight": 0,
            "probe_successes": 0,
            "probe_seen_at": 0.0,
        }

    def test_a_damaged_state_raises(self) -> None:
        with pytest.raises(ValueError, match="'shut'"):
            Breaker.from_dict(Breaker(CFG).to_dict() | {"state": "shut"})


class TestWindowSums:
    """The sums a breaker carries for its next record: derived data, never a decision of
    their own (the Redis store reads breakers back from JSON, without them)."""

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from("oxsX"),
                st.sampled_from([0.0, 0.0, 0.0, 0.3, 1.0, 4.0, 11.0, -1.0]),
            ),
            max_size=60,
        )
    )
    def test_a_breaker_with_sums_decides_as_one_read_back_from_json(
        self, steps: list[tuple[str, float]]
    ) -> None:
        kept = shared = Breaker(CFG)
        now = T0
        for letter, dt in steps:
            now += dt
            kept = calls(kept, letter, now)
            shared = calls(Breaker.from_dict(shared.to_dict(), CFG), letter, now)
            assert kept == shared
            if kept.sums is not None:
                held, *sums = kept.sums
                assert held is kept.buckets
                assert sums == [
                    sum(getattr(x, f) for x in held) for f in ("calls", "failures", "slow")
                ]

    def test_sums_carried_over_to_other_buckets_are_not_used(self) -> None:
        busy = calls(Breaker(CFG), "ooo")  # 3 calls, none failed
        assert busy.sums is not None
        failing = replace(busy, buckets=(Bucket(int(T0), 3, 3, 0),))  # sums still busy's
        assert record(failing, success=True, duration=FAST, now=T0, probe=False).state is (
            BreakerState.OPEN  # 4 calls, 3 failed: the bucket's numbers, not the old sums
        )

    def test_sums_are_not_part_of_the_state(self) -> None:
        b = calls(Breaker(CFG), "ox")
        bare = Breaker.from_dict(b.to_dict(), CFG)
        assert bare.sums is None
        assert (bare, hash(bare), repr(bare)) == (b, hash(b), repr(b))


class TestDescribe:
    def test_a_closed_breaker_shows_its_window(self) -> None:
        view = describe(calls(Breaker(CFG), "oxs", T0), T0)
        assert view == {
            "state": "closed",
            "since": 0.0,
            "epoch": 0,
            "calls": 3,
            "failures": 1,
            "slow_calls": 1,
            "failure_rate": pytest.approx(1 / 3),
            "slow_call_rate": pytest.approx(1 / 3),
            "probes_in_flight": 0,
            "probe_successes": 0,
            "retry_after_seconds": None,
        }

    def test_an_open_breaker_shows_when_it_lets_probes_through(self) -> None:
        assert describe(opened(), T0 + 5)["retry_after_seconds"] == 10.0
        assert describe(opened(), T0 + 50)["retry_after_seconds"] == 0.0

    def test_a_forced_open_breaker_shows_open_seconds(self) -> None:
        b = force(Breaker(CFG), "open", T0)
        assert describe(b, T0 + 500)["retry_after_seconds"] == 15.0

    def test_rates_of_an_empty_window_are_zero(self) -> None:
        assert WindowStats(0, 0, 0).failure_rate == WindowStats(0, 0, 0).slow_call_rate == 0.0


class TestPolicy:
    def test_the_defaults_are_the_designed_ones(self) -> None:
        assert BreakerConfig() == BreakerConfig(30, 20, 0.5, 10.0, 0.8, 15.0, 3, 3, 60.0)
        assert PolicySet().breaker == BreakerConfig()
        assert BreakerConfig().problems() == []

    def test_a_breaker_table_is_parsed(self) -> None:
        policy = parse(
            {"breaker.toml": {"version": POLICY_VERSION, "breaker": {"half_open_probes": 1}}}
        )
        assert policy.breaker == BreakerConfig(half_open_probes=1)

    def test_every_bad_value_is_reported(self) -> None:
        doc: dict[str, Any] = {
            "window_seconds": 0,
            "minimum_calls": 0,
            "failure_rate_threshold": 1.5,
            "slow_call_seconds": 0,
            "slow_call_rate_threshold": 0,
            "open_seconds": -1,
            "half_open_probes": 0,
            "half_open_successes_to_close": 0,
            "probe_timeout_seconds": 0,
        }
        with pytest.raises(ConfigError) as caught:
            parse({"b.toml": {"version": POLICY_VERSION, "breaker": doc}})
        assert caught.value.problems == [
            "b.toml [breaker] window_seconds: must be >= 1",
            "b.toml [breaker] minimum_calls: must be >= 1",
            "b.toml [breaker] half_open_probes: must be >= 1",
            "b.toml [breaker] half_open_successes_to_close: must be >= 1",
            "b.toml [breaker] failure_rate_threshold: must be > 0 and <= 1",
            "b.toml [breaker] slow_call_rate_threshold: must be > 0 and <= 1",
            "b.toml [breaker] slow_call_seconds: must be > 0",
            "b.toml [breaker] open_seconds: must be > 0",
            "b.toml [breaker] probe_timeout_seconds: must be > 0",
            "[breaker] probe_timeout_seconds must exceed [upstream] per_try_timeout_seconds "
            "(30.0): a probe still waiting for Graph would be taken for lost",
        ]

    def test_the_window_is_whole_seconds(self) -> None:
        with pytest.raises(ConfigError, match="window_seconds: expected an integer"):
            parse({"b.toml": {"version": 1, "breaker": {"window_seconds": 2.5}}})


# ------------------------------------------------------------------ a model to check against


@dataclass
class Model:
    """The rules restated as plainly as possible: a list of every call, filtered on demand."""

    cfg: BreakerConfig
    state: str = "closed"
    episode: int = 0
    entered: float = 0.0
    events: list[tuple[float, bool, bool]] = field(default_factory=list)  # when, failed, slow
    probes: int = 0
    good: int = 0
    seen: float = 0.0

    def go(self, state: str, now: float) -> None:
        self.state, self.episode, self.entered, self.seen = state, self.episode + 1, now, now
        self.events, self.probes, self.good = [], 0, 0

    def window(self, now: float) -> list[tuple[float, bool, bool]]:
        return [
            e for e in self.events if math.floor(e[0]) > math.floor(now) - self.cfg.window_seconds
        ]

    def admit(self, now: float) -> tuple[str, Any, Any]:
        if self.state in ("closed", "disabled"):
            return ("go", False, self.episode)
        if self.state == "forced-open":
            return ("stop", self.cfg.open_seconds, "forced-open")
        if self.state == "open":
            if now < self.entered + self.cfg.open_seconds:
                return ("stop", self.entered + self.cfg.open_seconds - now, "open")
            self.go("half-open", now)
        if self.probes < self.cfg.half_open_probes:
            self.probes += 1
            self.seen = now
            return ("go", True, self.episode)
        if now - self.seen >= self.cfg.probe_timeout_seconds:
            self.go("open", now)
            return ("stop", self.cfg.open_seconds, "open")
        return ("stop", 1.0, "half-open")

    def finish(self, episode: int, probe: bool, ok: bool, duration: float, now: float) -> None:
        if episode != self.episode:
            return
        slow = duration >= self.cfg.slow_call_seconds
        if self.state == "half-open" and probe:
            if not ok or slow:
                self.go("open", now)
                return
            self.good += 1
            self.probes -= 1
            self.seen = now
            if self.good == self.cfg.half_open_successes_to_close:
                self.go("closed", now)
        elif self.state == "closed" and not probe:
            self.events.append((now, not ok, slow))
            live = self.window(now)
            failed = sum(1 for e in live if e[1]) / len(live)
            slowed = sum(1 for e in live if e[2]) / len(live)
            if len(live) >= self.cfg.minimum_calls and (
                failed >= self.cfg.failure_rate_threshold
                or slowed >= self.cfg.slow_call_rate_threshold
            ):
                self.go("open", now)

    def cancel(self, episode: int, probe: bool, now: float) -> None:
        if episode == self.episode and self.state == "half-open" and probe:
            self.probes -= 1
            self.seen = now


SMALL = BreakerConfig(
    window_seconds=5,
    minimum_calls=3,
    failure_rate_threshold=0.5,
    slow_call_seconds=2.0,
    slow_call_rate_threshold=0.6,
    open_seconds=3.0,
    half_open_probes=2,
    half_open_successes_to_close=3,
    probe_timeout_seconds=10.0,
)


class BreakerMachine(RuleBasedStateMachine):
    """Random admits, outcomes, cancellations, clock steps and admin forces: the breaker and
    the model agree on every decision and on the state after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.breaker = Breaker(SMALL)
        self.model = Model(SMALL)
        self.pending: list[Admitted] = []

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.5, 3.0, 5.0, 10.0]))
    def clock_moves(self, seconds: float) -> None:
        self.now += seconds

    @rule(callers=st.integers(1, 4))
    def callers_arrive(self, callers: int) -> None:
        for _ in range(callers):
            self.breaker, decision = admit(self.breaker, self.now)
            expected = self.model.admit(self.now)
            match decision:
                case Admitted(probe=probe, epoch=epoch):
                    assert expected == ("go", probe, epoch)
                    self.pending.append(decision)
                case Rejected(retry_after_seconds=wait, state=state):
                    assert expected[0] == "stop"
                    assert wait == pytest.approx(expected[1])
                    assert state == expected[2]

    @precondition(lambda self: self.pending)
    @rule(
        pick=st.integers(0, 100),
        ok=st.booleans(),
        duration=st.sampled_from([0.1, 1.99, 2.0, 4.0]),
    )
    def a_call_ends(self, pick: int, ok: bool, duration: float) -> None:
        ticket = self.pending.pop(pick % len(self.pending))
        self.breaker = record(
            self.breaker,
            success=ok,
            duration=duration,
            now=self.now,
            probe=ticket.probe,
            epoch=ticket.epoch,
        )
        self.model.finish(ticket.epoch, ticket.probe, ok, duration, self.now)

    @precondition(lambda self: self.pending)
    @rule(pick=st.integers(0, 100))
    def a_call_is_cancelled(self, pick: int) -> None:
        ticket = self.pending.pop(pick % len(self.pending))
        self.breaker = release(self.breaker, now=self.now, probe=ticket.probe, epoch=ticket.epoch)
        self.model.cancel(ticket.epoch, ticket.probe, self.now)

    @rule(mode=st.sampled_from(["open", "disable", "reset"]))
    def an_admin_forces(self, mode: str) -> None:
        self.breaker = force(self.breaker, mode, self.now)  # type: ignore[arg-type]
        self.model.go(
            {"open": "forced-open", "disable": "disabled", "reset": "closed"}[mode], self.now
        )

    @invariant()
    def they_agree(self) -> None:
        b, m = self.breaker, self.model
        assert (b.state.value, b.epoch, b.since) == (m.state, m.episode, m.entered)
        assert (b.probes_in_flight, b.probe_successes) == (m.probes, m.good)
        live = m.window(self.now)
        assert window_stats(b, self.now) == WindowStats(
            calls=len(live),
            failures=sum(1 for e in live if e[1]),
            slow=sum(1 for e in live if e[2]),
        )
        assert 0 <= b.probes_in_flight <= SMALL.half_open_probes

    @invariant()
    def its_json_form_round_trips(self) -> None:
        data = json.loads(json.dumps(self.breaker.to_dict()))
        assert Breaker.from_dict(data, SMALL) == self.breaker


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_the_breaker_agrees_with_a_plain_model = BreakerMachine.TestCase
