"""gateway.core.ratelimit: usage headers and throttle errors turned into waits per gate.

Pure and synchronous: every transition takes `now` (POSIX seconds). Numbers follow
graph-api-notes Part A §2.2 (throttle codes) and §3 (headers: BUC regain time in minutes,
ad-account reset time in seconds, percents everywhere).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.app import load_policy
from gateway.core.policy import parse
from gateway.core.ratelimit import (
    APP,
    DEFAULT_ERRORS,
    ErrorRule,
    GateState,
    ThrottlePolicy,
    Usage,
    account_gate,
    admit,
    apply_usages,
    error_codes,
    error_gate,
    estimate,
    gates_for,
    observe,
    on_throttle_error,
    open_unpaced,
    pacing,
    parse_usage,
    record_throttle,
    try_admit,
    usage_for,
    wait_for,
)
from gateway.errors import ConfigError
from gateway.sim.config import RateLimits
from gateway.sim.ratelimit import RateModel

T0 = 1_700_000_000.0
POLICY = ThrottlePolicy()
ACCT = "act_1001"
AM = "act_1001:ads_management"


def buc(object_id: str = "1001", **entry: Any) -> dict[str, str]:
    fields = {"type": "ads_management", "call_count": 10, "total_cputime": 5, "total_time": 5}
    fields.update(entry)
    return {"X-Business-Use-Case-Usage": json.dumps({object_id: [fields]})}


def by_gate(usages: tuple[Usage, ...]) -> dict[str, Usage]:
    return {u.gate: u for u in usages}


class TestParseUsage:
    def test_app_usage_takes_the_highest_of_its_three_percents(self) -> None:
        headers = {"X-App-Usage": '{"call_count": 28, "total_time": 91, "total_cputime": 25}'}
        assert parse_usage(headers) == (Usage(APP, 91.0),)

    def test_header_names_are_matched_without_regard_to_case(self) -> None:
        headers = {"x-app-usage": '{"call_count": 28}'}
        assert parse_usage(headers) == (Usage(APP, 28.0),)

    def test_ad_account_usage_belongs_to_the_calls_account(self) -> None:
        headers = {
            "X-Ad-Account-Usage": '{"acc_id_util_pct": 9.67, "reset_time_duration": 100,'
            ' "ads_api_access_tier": "standard_access"}'
        }
        assert parse_usage(headers, "act_1001") == (Usage(ACCT, 9.67, tier="standard_access"),)
        assert parse_usage(headers, "1001") == (Usage(ACCT, 9.67, tier="standard_access"),)

    def test_ad_account_usage_without_an_account_is_ignored(self) -> None:
        assert parse_usage({"X-Ad-Account-Usage": '{"acc_id_util_pct": 50}'}) == ()

    def test_a_full_ad_account_score_regains_after_reset_time_duration_seconds(self) -> None:
        headers = {"X-Ad-Account-Usage": '{"acc_id_util_pct": 100, "reset_time_duration": 42}'}
        assert parse_usage(headers, ACCT) == (Usage(ACCT, 100.0, 42.0, 42.0),)

    def test_below_full_reset_time_duration_is_no_regain_time(self) -> None:
        headers = {"X-Ad-Account-Usage": '{"acc_id_util_pct": 99, "reset_time_duration": 42}'}
        assert parse_usage(headers, ACCT)[0].regain_seconds == 0.0

    def test_buc_regain_time_is_in_minutes(self) -> None:
        headers = buc(call_count=100, estimated_time_to_regain_access=3)
        (usage,) = parse_usage(headers, ACCT)
        assert usage == Usage(AM, 100.0, 180.0, 120.0)

    def test_buc_entries_are_keyed_by_object_id_and_type(self) -> None:
        doc = {
            "1001": [
                {"type": "ads_management", "call_count": 95, "ads_api_access_tier": "x"},
                {"type": "ads_insights", "total_time": 40},
            ],
            "act_1002": [{"type": "custom_audience", "total_cputime": 7}],
        }
        usages = by_gate(parse_usage({"X-Business-Use-Case-Usage": json.dumps(doc)}))
        assert usages == {
            AM: Usage(AM, 95.0, tier="x"),
            "act_1001:ads_insights": Usage("act_1001:ads_insights", 40.0),
            "act_1002:custom_audience": Usage("act_1002:custom_audience", 7.0),
        }

    def test_a_regain_time_alone_is_enough(self) -> None:
        headers = buc(call_count=None, total_cputime=None, total_time=None)
        assert parse_usage(headers) == ()
        headers = buc(
            call_count=None, total_cputime=None, total_time=None, estimated_time_to_regain_access=1
        )
        assert parse_usage(headers) == (Usage(AM, 0.0, 60.0, 0.0),)

    def test_the_accounts_reset_seconds_refine_the_rounded_buc_minutes(self) -> None:
        headers = {
            **buc(call_count=100, estimated_time_to_regain_access=1),
            "X-Ad-Account-Usage": '{"acc_id_util_pct": 100, "reset_time_duration": 37}',
        }
        usages = by_gate(parse_usage(headers, ACCT))
        assert usages[AM].regain_seconds == usages[AM].regain_low_seconds == 37.0

    def test_reset_seconds_outside_the_rounded_minute_are_not_used(self) -> None:
        headers = {
            **buc(call_count=100, estimated_time_to_regain_access=2),
            "X-Ad-Account-Usage": '{"acc_id_util_pct": 100, "reset_time_duration": 30}',
        }
        assert by_gate(parse_usage(headers, ACCT))[AM].regain_seconds == 120.0

    def test_another_objects_buc_is_not_refined_by_this_accounts_reset(self) -> None:
        headers = {
            **buc("2002", call_count=100, estimated_time_to_regain_access=1),
            "X-Ad-Account-Usage": '{"acc_id_util_pct": 100, "reset_time_duration": 37}',
        }
        assert by_gate(parse_usage(headers, ACCT))["act_2002:ads_management"].regain_seconds == 60

    def test_insights_throttle_header_feeds_the_insights_gates(self) -> None:
        headers = {
            "X-FB-Ads-Insights-Throttle": '{"app_id_util_pct": 100, "acc_id_util_pct": 10,'
            ' "ads_api_access_tier": "standard_access"}'
        }
        assert by_gate(parse_usage(headers, ACCT)) == {
            "app:ads_insights": Usage("app:ads_insights", 100.0),
            "act_1001:ads_insights": Usage("act_1001:ads_insights", 10.0, tier="standard_access"),
        }
        assert parse_usage(headers) == (Usage("app:ads_insights", 100.0),)
        assert parse_usage({"X-FB-Ads-Insights-Throttle": "{}"}, ACCT) == ()

    def test_two_reports_for_one_gate_are_merged_conservatively(self) -> None:
        headers = {
            **buc("1001", type="ads_insights", call_count=20, estimated_time_to_regain_access=2),
            "X-FB-Ads-Insights-Throttle": '{"acc_id_util_pct": 70, "ads_api_access_tier": "t"}',
        }
        (usage,) = parse_usage(headers, ACCT)
        assert usage == Usage("act_1001:ads_insights", 70.0, 120.0, 60.0, "t")
        doc = {"1001": [{"type": "ads_management", "call_count": 5}] * 2}
        doc["1001"].append({"type": "ads_management", "estimated_time_to_regain_access": 1})
        (usage,) = parse_usage({"X-Business-Use-Case-Usage": json.dumps(doc)})
        assert (usage.pct, usage.regain_seconds) == (5.0, 60.0)

    @pytest.mark.parametrize(
        "value",
        [
            "not json",
            "[1, 2]",
            '"text"',
            "{",
            "[" * 100_000,  # nested past the parser's recursion limit
            '{"call_count": "lots", "total_time": true, "total_cputime": null}',
            '{"call_count": -5}',
            '{"call_count": NaN}',
            '{"call_count": Infinity}',
        ],
    )
    def test_malformed_headers_are_ignored(self, value: str) -> None:
        headers = {
            "X-App-Usage": value,
            "X-Ad-Account-Usage": value,
            "X-Business-Use-Case-Usage": value,
            "X-FB-Ads-Insights-Throttle": value,
        }
        assert parse_usage(headers, ACCT) == ()

    def test_malformed_buc_entries_are_skipped_and_the_rest_kept(self) -> None:
        doc = {
            "": [{"type": "ads_management", "call_count": 5}],
            "1": "not a list",
            "2": [
                "not an object",
                {"call_count": 5},
                {"type": 7, "call_count": 5},
                {"type": "Bad Type!", "call_count": 5},
                {"type": "ads_management", "estimated_time_to_regain_access": "soon"},
                {"type": "ads_management", "call_count": "12"},  # numeric strings are read
            ],
        }
        headers = {"X-Business-Use-Case-Usage": json.dumps(doc)}
        assert parse_usage(headers) == (Usage("act_2:ads_management", 12.0),)

    def test_a_non_text_header_value_and_a_non_text_tier_are_ignored(self) -> None:
        headers: dict[str, Any] = {
            "X-App-Usage": b'{"call_count": 5}',
            "X-Ad-Account-Usage": '{"acc_id_util_pct": 5, "ads_api_access_tier": 3}',
        }
        assert parse_usage(headers, ACCT) == (Usage(ACCT, 5.0),)

    def test_no_headers_no_usages(self) -> None:
        assert parse_usage({"Content-Type": "application/json"}, ACCT) == ()


class TestAgainstTheSimulator:
    """The headers gateway.sim.ratelimit sends close the gates for exactly its block."""

    def test_a_blocked_sim_account_closes_its_gates_until_the_block_ends(self) -> None:
        model = RateModel(RateLimits(max_score=9.0, block_seconds=60.0))
        for _ in range(3):
            assert model.charge("1001", write=True, mutation=False, now=T0) is None
        assert model.charge("1001", write=True, mutation=False, now=T0 + 1) is not None
        halfway = T0 + 31
        states = apply_usages(
            {g: GateState() for g in (ACCT, AM, APP)},
            parse_usage(model.headers(["1001"], now=halfway), ACCT),
            halfway,
        )
        assert max(wait_for(s, halfway) for s in states.values()) == pytest.approx(30.0)

    def test_a_development_tier_block_is_read_as_five_minutes(self) -> None:
        model = RateModel(RateLimits(tier="development_access", max_score=3, block_seconds=300))
        model.charge("1001", write=True, mutation=False, now=T0)
        model.charge("1001", write=True, mutation=False, now=T0)
        usages = parse_usage(model.headers(["1001"], now=T0), ACCT)
        states = apply_usages({}, usages, T0)
        assert {wait_for(s, T0) for k, s in states.items() if k != APP} == {300.0}
        assert states[AM].tier == states[ACCT].tier == "development_access"


class TestObserve:
    def test_full_usage_with_a_regain_time_blocks_until_then(self) -> None:
        state = observe(GateState(), Usage(AM, 100.0, 180.0, 120.0), T0)
        assert state.blocked_until == T0 + 180
        assert state.reason == "usage"
        assert wait_for(state, T0 + 100) == 80.0

    def test_a_regain_time_blocks_even_below_full_usage(self) -> None:
        assert observe(GateState(), Usage(AM, 40.0, 60.0, 0.0), T0).blocked_until == T0 + 60

    def test_full_usage_without_a_regain_time_waits_the_tiers_block(self) -> None:
        assert observe(GateState(), Usage(ACCT, 100.0), T0).blocked_until == T0 + 60
        dev = Usage(ACCT, 100.0, tier="development_access")
        assert observe(GateState(), dev, T0).blocked_until == T0 + 300
        remembered = GateState(tier="development_access")
        assert observe(remembered, Usage(ACCT, 100.0), T0).blocked_until == T0 + 300

    def test_the_gate_opens_once_the_regain_time_has_passed(self) -> None:
        state = observe(GateState(), Usage(AM, 100.0, 60.0, 0.0), T0)
        assert wait_for(state, T0 + 59.5) == 0.5
        assert wait_for(state, T0 + 60) == 0.0
        assert wait_for(state, T0 + 600) == 0.0

    def test_a_rounded_estimate_mid_block_does_not_stretch_the_block(self) -> None:
        state = observe(GateState(), Usage(AM, 100.0, 60.0, 60.0), T0)  # exact: 60 s
        later = observe(state, Usage(AM, 100.0, 60.0, 0.0), T0 + 30)  # "1 minute" at 30 s
        assert later.blocked_until == T0 + 60

    def test_a_later_end_than_known_extends_the_block(self) -> None:
        state = observe(GateState(), Usage(AM, 100.0, 60.0, 60.0), T0)
        later = observe(state, Usage(AM, 100.0, 180.0, 120.0), T0 + 30)
        assert later.blocked_until == T0 + 210

    def test_nothing_shortens_a_block(self) -> None:
        state = GateState(blocked_until=T0 + 600, reason="613")
        same = observe(state, Usage(ACCT, 100.0, 10.0, 10.0), T0)
        assert (same.blocked_until, same.reason) == (T0 + 600, "613")
        assert observe(state, Usage(ACCT, 20.0), T0).blocked_until == T0 + 600

    def test_no_block_lasts_longer_than_the_policys_maximum(self) -> None:
        state = observe(GateState(), Usage(AM, 100.0, 1440 * 60.0, 1439 * 60.0), T0)
        assert state.blocked_until == T0 + POLICY.max_block_seconds

    def test_usage_up_to_the_threshold_does_not_slow_calls(self) -> None:
        state = observe(GateState(), Usage(AM, 80.0), T0)
        assert state.spacing_seconds == 0.0
        assert wait_for(admit(state, T0), T0) == 0.0

    def test_above_the_threshold_calls_are_spaced_more_as_usage_grows(self) -> None:
        spacings = [observe(GateState(), Usage(AM, p), T0).spacing_seconds for p in (85, 90, 99)]
        assert spacings == pytest.approx([0.25, 0.5, 0.95])
        state = admit(observe(GateState(), Usage(AM, 90.0), T0), T0)
        assert wait_for(state, T0) == 0.5
        assert wait_for(state, T0 + 0.5) == 0.0

    def test_a_block_replaces_pacing_and_remembers_usage_and_tier(self) -> None:
        paced = observe(GateState(), Usage(AM, 95.0, tier="standard_access"), T0)
        blocked = observe(paced, Usage(AM, 100.0, 60.0, 60.0), T0 + 1)
        assert (blocked.spacing_seconds, blocked.usage_pct) == (0.0, 100.0)
        assert (blocked.tier, blocked.observed_at) == ("standard_access", T0 + 1)

    def test_pacing_is_capped_at_its_maximum(self) -> None:
        assert pacing(150.0) == POLICY.max_spacing_seconds
        assert pacing(90.0, ThrottlePolicy(slow_down_pct=0, max_spacing_seconds=10)) == 9.0


class TestThrottleErrors:
    @pytest.mark.parametrize(
        ("code", "subcode", "gate", "wait"),
        [
            (80004, 2446079, AM, 60.0),
            (80000, 2446079, "act_1001:ads_insights", 60.0),
            (80003, None, "act_1001:custom_audience", 60.0),
            (80014, 2446079, "act_1001:catalog_batch", 60.0),
            (17, 2446079, ACCT, 60.0),
            (17, None, ACCT, 60.0),
            (17, 424242, ACCT, 60.0),
            (613, 424242, ACCT, 60.0),
            (613, 1487742, ACCT, 60.0),
            (613, 5044001, AM, 1.0),
            (613, None, ACCT, 3600.0),
            (613, 1996, APP, 300.0),
            (4, None, APP, 300.0),
            (4, 1504022, "app:ads_insights", 300.0),
            (32, 123, ACCT, 60.0),
        ],
    )
    def test_each_code_closes_its_gate_for_its_default_wait(
        self, code: int, subcode: int | None, gate: str, wait: float
    ) -> None:
        assert error_gate(ACCT, code, subcode) == gate
        state = on_throttle_error(GateState(), code, subcode, None, T0)
        assert wait_for(state, T0) == wait
        assert state.reason == (f"{code}/{subcode}" if subcode else str(code))

    @pytest.mark.parametrize(
        ("code", "subcode"), [(613, 1487632), (17, 1885172), (613, 1487225), (100, None), (1, 99)]
    )
    def test_business_rule_limits_and_other_errors_are_no_waits(
        self, code: int, subcode: int | None
    ) -> None:
        assert error_gate(ACCT, code, subcode) is None
        assert on_throttle_error(GateState(), code, subcode, None, T0) == GateState()

    def test_the_development_tier_waits_longer_for_the_account_score_block(self) -> None:
        dev = Usage(ACCT, 50.0, tier="development_access")
        assert on_throttle_error(GateState(), 613, 1487742, dev, T0).blocked_until == T0 + 300
        known = GateState(tier="development_access")
        assert on_throttle_error(known, 80004, 2446079, None, T0).blocked_until == T0 + 300
        # Codes with no development wait keep theirs on that tier.
        assert on_throttle_error(known, 613, 5044001, None, T0).blocked_until == T0 + 1

    def test_a_regain_time_in_the_answer_wins_over_the_default(self) -> None:
        usage = Usage(AM, 100.0, 120.0, 60.0, "standard_access")
        state = on_throttle_error(GateState(strikes=3), 80004, 2446079, usage, T0)
        assert (state.blocked_until, state.strikes, state.usage_pct) == (T0 + 120, 0, 100.0)

    def test_throttled_again_soon_after_a_default_block_doubles_the_next(self) -> None:
        first = on_throttle_error(GateState(), 80004, 2446079, None, T0)
        assert (first.blocked_until, first.strikes) == (T0 + 60, 1)
        second = on_throttle_error(first, 80004, 2446079, None, T0 + 61)
        assert (second.blocked_until, second.strikes) == (T0 + 61 + 120, 2)

    def test_answers_to_calls_sent_before_the_block_do_not_escalate_it(self) -> None:
        """They only count from their own arrival (Meta: calls while limited extend it)."""
        first = on_throttle_error(GateState(), 80004, 2446079, None, T0)
        again = on_throttle_error(first, 80004, 2446079, None, T0 + 0.2)
        assert (again.blocked_until, again.strikes) == (T0 + 60.2, 1)

    def test_a_throttle_long_after_the_last_block_starts_over(self) -> None:
        old = GateState(blocked_until=T0 - 3600, strikes=4)
        state = on_throttle_error(old, 80004, 2446079, None, T0)
        assert (state.blocked_until, state.strikes) == (T0 + 60, 1)

    def test_error_gate_needs_an_account_for_account_limits_only(self) -> None:
        assert error_gate(None, 80004, 2446079) is None
        assert error_gate(None, 4, None) == APP
        assert error_gate("1001", 613, 1487742) == ACCT

    @pytest.mark.parametrize(
        ("error", "codes"),
        [
            ({"error": {"code": 80004, "error_subcode": 2446079}}, (80004, 2446079)),
            ({"code": 613, "error_subcode": 1487742}, (613, 1487742)),
            ({"code": 613, "subcode": None}, (613, None)),
            ({"code": "4", "subcode": 0}, (4, None)),
            ({"code": 17, "subcode": "x"}, (17, None)),
            ({"code": True}, None),
            ({"code": 1.5}, None),
            ({"message": "no code"}, None),
            ({"error": "text"}, None),
            ("not an error", None),
        ],
    )
    def test_error_codes_are_read_from_any_error_shape(
        self, error: Any, codes: tuple[int, int | None] | None
    ) -> None:
        assert error_codes(error) == codes


class TestGates:
    def test_a_call_passes_its_accounts_gates_and_the_apps(self) -> None:
        assert gates_for("act_1001") == (ACCT, AM, APP, "app:ads_management")
        assert gates_for("1001", "ads_insights") == (
            ACCT,
            "act_1001:ads_insights",
            APP,
            "app:ads_insights",
        )
        assert gates_for(None) == (APP, "app:ads_management")
        assert account_gate("42") == account_gate("act_42") == "act_42"

    def test_try_admit_admits_only_when_every_gate_is_open(self) -> None:
        paced = GateState(spacing_seconds=0.5)
        states = {ACCT: GateState(), AM: paced}
        wait, admitted = try_admit(states, T0)
        assert wait == 0.0
        assert admitted == {ACCT: GateState(), AM: GateState(spacing_seconds=0.5, admitted_at=T0)}
        wait, unchanged = try_admit({**admitted, APP: GateState(blocked_until=T0 + 9)}, T0)
        assert (wait, unchanged[AM]) == (9.0, admitted[AM])

    def test_estimate_adds_one_spacing_per_call_ahead(self) -> None:
        states = {ACCT: GateState(blocked_until=T0 + 10), AM: GateState(spacing_seconds=0.5)}
        assert estimate(states, T0, ahead=4) == 12.0
        assert estimate({}, T0, ahead=4) == 0.0

    def test_usage_for_prefers_the_gates_own_usage(self) -> None:
        own = Usage(AM, 50.0)
        other = Usage("act_999:ads_management", 100.0, 120.0, 60.0)
        assert usage_for([other, own], AM) is own

    def test_usage_for_falls_back_to_the_same_buc_type_under_another_id(self) -> None:
        shorter = Usage("act_7:ads_management", 100.0, 60.0, 0.0)
        longer = Usage("act_999:ads_management", 100.0, 120.0, 60.0)
        insights = Usage("act_5:ads_insights", 100.0, 600.0, 540.0)
        assert usage_for([shorter, longer, insights], AM) is longer
        assert usage_for([Usage("act_7:ads_management", 30.0)], AM) is None
        assert usage_for([longer], ACCT) is None
        assert usage_for([Usage("app", 100.0, 60.0, 0.0)], "app:ads_management") is None

    def test_record_throttle_observes_the_answer_then_closes_the_errors_gate(self) -> None:
        usages = (Usage(APP, 40.0), Usage(AM, 100.0, 60.0, 60.0))
        states = {k: GateState() for k in (APP, AM)}
        wait, new = record_throttle(states, AM, (80004, 2446079), usages, T0)
        assert wait == 60.0
        assert new[APP].usage_pct == 40.0
        assert new[AM].reason == "80004/2446079"

    def test_record_throttle_without_a_gate_only_observes(self) -> None:
        usages = (Usage(APP, 40.0),)
        wait, new = record_throttle({APP: GateState()}, None, (100, None), usages, T0)
        assert (wait, new[APP].usage_pct) == (None, 40.0)
        assert record_throttle({APP: GateState()}, APP, None, (), T0) == (
            None,
            {APP: GateState()},
        )

    @given(
        st.lists(
            st.tuples(
                st.floats(0, 200),
                st.floats(0, 7200),
                st.floats(0, 7200),
                st.floats(0, 100),
            ),
            max_size=20,
        )
    )
    def test_a_gate_never_opens_earlier_than_it_last_said(
        self, steps: list[tuple[float, float, float, float]]
    ) -> None:
        """Whatever the answers say, waits are >= 0 and the block end never moves back."""
        state, now = GateState(), T0
        for pct, high, low, dt in steps:
            now += dt
            before = state.blocked_until
            state = observe(state, Usage(AM, pct, high, min(low, high)), now)
            assert state.blocked_until >= before
            assert wait_for(state, now) >= 0.0

    @given(
        st.floats(0, 200),
        st.floats(0, 2 * T0),
        st.floats(0, 2),
        st.floats(0, 2 * T0),
        st.floats(-10, 10),
    )
    def test_an_open_unpaced_gate_is_exactly_one_try_admit_leaves_as_it_is(
        self, pct: float, blocked_until: float, spacing: float, admitted_at: float, dt: float
    ) -> None:
        """The in-process shortcut (admit with no store step) agrees with try_admit."""
        state = GateState(
            blocked_until=blocked_until,
            usage_pct=pct,
            spacing_seconds=spacing,
            admitted_at=admitted_at,
        )
        now = T0 + dt
        wait, new = try_admit({AM: state}, now)
        assert open_unpaced(state, now) == (wait <= 0 and new[AM] is state)

    def test_open_unpaced_cases(self) -> None:
        assert open_unpaced(GateState(), T0)
        assert open_unpaced(GateState(blocked_until=T0, usage_pct=50.0, observed_at=T0), T0)
        assert not open_unpaced(GateState(blocked_until=T0 + 1), T0)
        assert not open_unpaced(GateState(spacing_seconds=0.1), T0)


class TestObserveKeepsWhatItDoesNotSet:
    @pytest.mark.parametrize("pct", [0.0, 50.0, 85.0])
    def test_below_full_usage_only_usage_spacing_time_and_tier_change(self, pct: float) -> None:
        """observe() builds the state field by field: every other field is carried over."""
        state = GateState(
            blocked_until=T0 - 5,
            usage_pct=99.0,
            spacing_seconds=0.9,
            admitted_at=T0 - 1,
            observed_at=T0 - 2,
            tier="development_access",
            reason="80004/2446079",
            strikes=2,
        )
        new = observe(state, Usage(AM, pct, tier="standard_access"), T0)
        expected = {
            **state.to_dict(),
            "usage_pct": pct,
            "spacing_seconds": pacing(pct),
            "observed_at": T0,
            "tier": "standard_access",
        }
        assert new.to_dict() == expected


class TestGateStateJson:
    def test_round_trip_through_json(self) -> None:
        state = GateState(
            blocked_until=T0 + 60,
            usage_pct=100.0,
            spacing_seconds=0.5,
            admitted_at=T0,
            observed_at=T0,
            tier="standard_access",
            reason="80004/2446079",
            strikes=2,
        )
        assert GateState.from_dict(json.loads(json.dumps(state.to_dict()))) == state

    def test_missing_keys_take_defaults_and_unknown_keys_are_ignored(self) -> None:
        doc = {"blocked_until": 5, "from_a_newer_version": True}
        assert GateState.from_dict(doc) == GateState(blocked_until=5.0)

    @pytest.mark.parametrize(
        "doc",
        [
            [],
            {"blocked_until": "soon"},
            {"blocked_until": None},
            {"usage_pct": float("nan")},
            {"tier": 3},
            {"strikes": 1.5},
            {"strikes": True},
        ],
    )
    def test_a_malformed_state_is_refused(self, doc: Any) -> None:
        with pytest.raises(ValueError, match="GateState"):
            GateState.from_dict(doc)


class TestPolicy:
    def test_the_bundled_throttle_table_is_the_built_in_default(self) -> None:
        assert load_policy(None).throttle == ThrottlePolicy()
        assert ThrottlePolicy().errors == DEFAULT_ERRORS

    def test_rule_lookup_prefers_the_exact_subcode_then_none_then_the_code(self) -> None:
        policy = ThrottlePolicy(
            errors={
                "9/1": {"gate": "account", "wait_seconds": 1},
                "9/none": {"gate": "account", "wait_seconds": 2},
                "9": {"gate": "app", "wait_seconds": 3, "development_wait_seconds": 4},
                "9/7": {"gate": "none"},
            }
        )
        assert policy.rule(9, 7) is None
        assert policy.rule(9, 1) == ErrorRule("account", 1.0)
        assert policy.rule(9, None) == ErrorRule("account", 2.0)
        assert policy.rule(9, 5) == ErrorRule("app", 3.0, 4.0)
        assert policy.rule(8, None) is None
        assert ErrorRule("app", 3.0, 4.0).wait("development_access") == 4.0
        assert ErrorRule("app", 3.0, 4.0).wait("standard_access") == 3.0

    def test_a_throttle_table_is_parsed_from_a_policy_document(self) -> None:
        doc = {
            "version": 1,
            "throttle": {
                "slow_down_pct": 70,
                "queue_max_per_account": 5,
                "errors": {"80004": {"gate": "ads_management", "wait_seconds": 30}},
            },
        }
        throttle = parse({"throttle.toml": doc}).throttle
        assert (throttle.slow_down_pct, throttle.queue_max_per_account) == (70.0, 5)
        assert error_gate(ACCT, 613, 1487742, throttle) is None
        assert on_throttle_error(GateState(), 80004, 1, None, T0, throttle).blocked_until == T0 + 30

    def test_every_problem_in_a_throttle_table_is_listed(self) -> None:
        bad = {
            "slow_down_pct": 100,
            "max_spacing_seconds": -1,
            "full_usage_wait_seconds": 0,
            "max_wait_seconds": -5,
            "escalation_factor": 0.5,
            "queue_max_per_account": 0,
            "errors": {
                "abc": {"gate": "app", "wait_seconds": 1},
                "1": {"gate": "Not A Gate", "wait_seconds": 1, "retry": True},
                "2": {"gate": 5, "wait_seconds": "60"},
                "3": {"gate": "account", "development_wait_seconds": -1},
                "4": {"gate": "app:ads_insights", "wait_seconds": 0},
                "5": {"gate": "none"},
                "6": {"gate": "none", "wait_seconds": -1},
            },
        }
        with pytest.raises(ConfigError) as info:
            parse({"t.toml": {"version": 1, "throttle": bad}})
        text = "\n".join(info.value.problems)
        for needle in (
            "slow_down_pct",
            "max_spacing_seconds",
            "full_usage_wait_seconds: must be > 0",
            "max_wait_seconds: must be > 0",
            "escalation_factor",
            "queue_max_per_account",
            "errors.abc: the key",
            "errors.1: unknown keys ['retry']",
            "errors.1.gate",
            "errors.2.gate",
            "errors.2.wait_seconds",
            "errors.3.wait_seconds",
            "errors.3.development_wait_seconds",
            "errors.4.wait_seconds",
            "errors.6.wait_seconds",
        ):
            assert needle in text, needle
        assert "errors.4.gate" not in text
        assert "errors.5" not in text
        assert ThrottlePolicy().problems() == []
