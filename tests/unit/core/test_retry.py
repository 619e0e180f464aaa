"""gateway.core.retry: error classification, jittered backoff and the retry budget.

Classification is checked against the built-in rules, which tests/policies holds equal to the
shipped policies/retry.toml; rule semantics (first match wins, defaults) use small custom rules.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.policy import parse
from gateway.core.retry import (
    BudgetBucket,
    BudgetState,
    ErrorClass,
    ErrorRule,
    ErrorRules,
    RetryPolicy,
    Transport,
    classify_error,
    graph_error,
    max_delay,
    next_delay,
    record_request,
    should_retry,
    try_retry,
)
from gateway.errors import ConfigError

THROTTLE, TRANSIENT, PERMANENT = ErrorClass.THROTTLE, ErrorClass.TRANSIENT, ErrorClass.PERMANENT
SHIPPED = ErrorRules()
BUC_CODES = [80000, 80001, 80002, 80003, 80004, 80005, 80006, 80008, 80009, 80014]


def graph(
    code: Any = None, subcode: Any = None, is_transient: Any = None, message: str = "x"
) -> dict[str, Any]:
    """A Graph `error` object as Graph sends it (absent keys left out)."""
    fields = {"code": code, "error_subcode": subcode, "is_transient": is_transient}
    return {
        "message": message,
        "type": "OAuthException",
        "fbtrace_id": "A",
        **{key: value for key, value in fields.items() if value is not None},
    }


def classify(
    code: Any = None,
    subcode: Any = None,
    is_transient: Any = None,
    *,
    status: int | None = 400,
    rules: ErrorRules = SHIPPED,
    message: str = "x",
) -> ErrorClass:
    return classify_error(rules, status=status, error=graph(code, subcode, is_transient, message))


def rules_of(*rules: dict[str, Any], **defaults: Any) -> ErrorRules:
    return ErrorRules(rules=rules, **defaults)


# --------------------------------------------------------------------------- classification


class TestShippedClassification:
    @pytest.mark.parametrize(
        ("status", "code", "subcode", "is_transient", "expected"),
        [
            # throttles (graph-api-notes §2.2)
            (403, 4, None, None, THROTTLE),
            (400, 4, 1504022, None, THROTTLE),
            (400, 4, 1504039, None, THROTTLE),
            (400, 17, None, None, THROTTLE),
            (400, 17, 2446079, None, THROTTLE),
            (400, 32, None, None, THROTTLE),
            (400, 613, None, None, THROTTLE),
            (400, 613, 1487742, None, THROTTLE),
            (400, 613, 5044001, None, THROTTLE),
            (400, 613, 1996, None, THROTTLE),
            (403, 4, None, True, THROTTLE),  # a throttle with the flag still waits
            (400, 80004, 2446079, False, THROTTLE),
            # transient (§2.1)
            (500, 1, None, None, TRANSIENT),
            (500, 1, 99, None, TRANSIENT),
            (400, 2, None, True, TRANSIENT),
            (400, 2, 1504043, None, TRANSIENT),
            (400, 341, None, None, TRANSIENT),
            (400, 3910001, None, None, TRANSIENT),
            (400, -2, 2490547, None, TRANSIENT),
            (400, 999999, None, True, TRANSIENT),
            (400, 100, None, True, TRANSIENT),  # Graph's own hint beats a refusal code
            (503, 999999, None, None, TRANSIENT),  # an unknown code on a 5xx
            # permanent (§2.3-2.6)
            (400, 100, None, None, PERMANENT),
            (400, 100, 33, None, PERMANENT),
            (400, 100, 33, False, PERMANENT),
            (400, 100, 1504018, True, PERMANENT),
            (400, 102, None, None, PERMANENT),
            (400, 104, None, None, PERMANENT),
            (403, 3, None, None, PERMANENT),
            (403, 10, None, None, PERMANENT),
            (403, 10, 2332002, None, PERMANENT),
            (400, 368, None, None, PERMANENT),
            (400, 368, None, True, PERMANENT),  # a policy block is never retried
            (400, 1404078, None, None, PERMANENT),
            (400, 2635, None, None, PERMANENT),
            (404, 803, None, None, PERMANENT),
            (400, 2500, None, None, PERMANENT),
            (500, 100, None, None, PERMANENT),  # a known refusal stays one on a 5xx
            (400, 17, 1885172, None, PERMANENT),  # spend cap: blocked until tomorrow
            (400, 613, 1487632, None, PERMANENT),  # budget edits: blocked for an hour
            (400, 613, 1487225, None, PERMANENT),
            (400, 2, 1504038, None, PERMANENT),  # insights sync timeout: not as-is
            (400, -2, None, None, PERMANENT),  # an internal code without a known subcode
            (400, 999999, None, None, PERMANENT),  # an unknown code: the default
            (400, 999999, None, False, PERMANENT),
        ],
    )
    def test_graph_errors_are_classified_by_code_subcode_and_flag(
        self,
        status: int,
        code: int,
        subcode: int | None,
        is_transient: bool | None,
        expected: ErrorClass,
    ) -> None:
        assert classify(code, subcode, is_transient, status=status) is expected

    @pytest.mark.parametrize("code", BUC_CODES)
    def test_every_business_use_case_limit_is_a_throttle(self, code: int) -> None:
        assert classify(code, 2446079) is THROTTLE
        assert classify(code) is THROTTLE

    @pytest.mark.parametrize("code", [80007, 80010, 80011, 80012, 80013, 80015])
    def test_undocumented_codes_near_the_buc_family_are_not_throttles(self, code: int) -> None:
        assert classify(code) is PERMANENT

    @pytest.mark.parametrize("code", [200, 201, 273, 274, 294, 299])
    def test_the_200_to_299_permission_family_is_permanent_even_on_a_5xx(self, code: int) -> None:
        assert classify(code, status=403) is PERMANENT
        assert classify(code, status=500) is PERMANENT

    @pytest.mark.parametrize("subcode", [None, 458, 459, 460, 463, 464, 467, 492])
    def test_the_190_token_family_is_permanent_whatever_the_subcode(
        self, subcode: int | None
    ) -> None:
        assert classify(190, subcode) is PERMANENT
        assert classify(190, subcode, status=500) is PERMANENT

    @pytest.mark.parametrize(
        ("status", "transport", "expected"),
        [
            (None, "connect", TRANSIENT),
            (None, "timeout", TRANSIENT),
            (None, "reset", TRANSIENT),
            (502, "not_json", TRANSIENT),
            (500, "not_json", TRANSIENT),
            (599, "not_json", TRANSIENT),
            (429, "not_json", THROTTLE),
            (404, "not_json", PERMANENT),
            (403, "not_json", PERMANENT),
            (200, "not_json", PERMANENT),
        ],
    )
    def test_failures_without_a_graph_error_are_classified_by_transport_and_status(
        self, status: int | None, transport: str, expected: ErrorClass
    ) -> None:
        assert classify_error(SHIPPED, status=status, error=None, transport=transport) is expected

    def test_a_json_5xx_without_an_error_object_is_transient(self) -> None:
        assert classify_error(SHIPPED, status=500, error=None) is TRANSIENT

    def test_the_transport_may_be_given_as_the_enum(self) -> None:
        assert classify_error(SHIPPED, status=None, error=None, transport=Transport.RESET) is (
            TRANSIENT
        )

    @given(
        code=st.sampled_from([1, 2, 4, 17, 32, 100, 190, 200, 368, 613, 80004, 424242]),
        subcode=st.none() | st.sampled_from([33, 463, 1487742, 1885172, 2446079]),
        is_transient=st.none() | st.booleans(),
        status=st.sampled_from([400, 403, 500, 503]),
        message=st.text(),
    )
    def test_message_text_never_matters(
        self,
        code: int,
        subcode: int | None,
        is_transient: bool | None,
        status: int,
        message: str,
    ) -> None:
        """Meta rewords messages without notice (graph-api-notes §1.1)."""
        baseline = classify(code, subcode, is_transient, status=status, message="")
        assert classify(code, subcode, is_transient, status=status, message=message) is baseline

    @pytest.mark.parametrize(
        ("message", "code"),
        [
            ("(#4) Application request limit reached", 100),
            ("Service temporarily unavailable, please retry", 190),
            ("An unknown error occurred", 200),
            ("Invalid parameter", 4),
        ],
    )
    def test_a_misleading_message_does_not_change_the_class(self, message: str, code: int) -> None:
        assert classify(code, message=message) is classify(code, message="")

    @pytest.mark.parametrize("value", ["4", 4.0, True, None, [4]])
    def test_a_code_that_is_not_an_integer_is_treated_as_absent(self, value: Any) -> None:
        assert classify_error(SHIPPED, status=400, error={"code": value}) is PERMANENT

    @pytest.mark.parametrize("value", ["true", 1, "yes"])
    def test_an_is_transient_that_is_not_a_bool_is_treated_as_absent(self, value: Any) -> None:
        assert classify(424242, is_transient=value) is PERMANENT

    def test_a_subcode_that_is_not_an_integer_is_treated_as_absent(self) -> None:
        assert classify(17, "1885172") is THROTTLE

    def test_nothing_to_classify_is_a_bug(self) -> None:
        with pytest.raises(ValueError, match="nothing to classify"):
            classify_error(SHIPPED, status=None, error=None)

    def test_an_unknown_transport_is_a_bug(self) -> None:
        with pytest.raises(ValueError, match="dns"):
            classify_error(SHIPPED, status=None, error=None, transport="dns")


class TestRuleSemantics:
    def test_the_first_matching_rule_wins(self) -> None:
        rules = rules_of(
            {"class": "permanent", "codes": [7], "subcodes": [1]},
            {"class": "throttle", "codes": [7]},
            {"class": "transient", "codes": [7]},
        )
        assert classify(7, 1, rules=rules) is PERMANENT
        assert classify(7, 2, rules=rules) is THROTTLE
        assert classify(7, rules=rules) is THROTTLE

    def test_reordering_rules_changes_the_answer(self) -> None:
        flag_first = rules_of(
            {"class": "transient", "is_transient": True}, {"class": "throttle", "codes": [4]}
        )
        assert classify(4, is_transient=True, rules=flag_first) is TRANSIENT
        assert classify(4, is_transient=True) is THROTTLE

    def test_every_condition_of_a_rule_must_hold(self) -> None:
        rules = rules_of(
            {
                "class": "throttle",
                "codes": [5],
                "subcodes": [6],
                "http_status": [[400, 403]],
                "is_transient": False,
            }
        )
        assert classify(5, 6, False, status=403, rules=rules) is THROTTLE
        assert classify(5, 6, False, status=404, rules=rules) is PERMANENT
        assert classify(5, 6, None, status=400, rules=rules) is PERMANENT
        assert classify(5, 6, True, status=400, rules=rules) is PERMANENT
        assert classify(5, 7, False, status=400, rules=rules) is PERMANENT
        assert classify(5, None, False, status=400, rules=rules) is PERMANENT
        assert classify(4, 6, False, status=400, rules=rules) is PERMANENT
        assert classify_error(rules, status=None, error=graph(5, 6, False)) is PERMANENT

    def test_codes_and_code_ranges_are_one_condition(self) -> None:
        rules = rules_of({"class": "throttle", "codes": [7], "code_ranges": [[10, 12], [20, 20]]})
        assert [classify(c, rules=rules) for c in (6, 7, 9, 10, 12, 13, 20, 21)] == [
            PERMANENT,
            THROTTLE,
            PERMANENT,
            THROTTLE,
            THROTTLE,
            PERMANENT,
            THROTTLE,
            PERMANENT,
        ]
        assert classify_error(rules, status=400, error={}) is PERMANENT

    def test_a_subcode_rule_without_codes_matches_any_code(self) -> None:
        rules = rules_of({"class": "throttle", "subcodes": [2446079]})
        assert classify(80099, 2446079, rules=rules) is THROTTLE

    def test_a_transport_rule_does_not_match_a_graph_answer(self) -> None:
        rules = rules_of({"class": "throttle", "transport": ["not_json"]})
        assert classify_error(rules, status=400, error=graph(1)) is PERMANENT
        assert classify_error(rules, status=400, error=None, transport="not_json") is THROTTLE

    def test_a_status_rule_matches_any_body(self) -> None:
        rules = rules_of({"class": "throttle", "http_status": [[429, 429]]})
        assert classify_error(rules, status=429, error=graph(1)) is THROTTLE
        assert classify_error(rules, status=429, error=None, transport="not_json") is THROTTLE

    def test_a_matching_rule_is_reported_by_matches(self) -> None:
        rule = ErrorRule(ErrorClass.TRANSIENT, transport=frozenset({Transport.TIMEOUT}))
        facts: dict[str, Any] = {"code": None, "subcode": None, "is_transient": None}
        assert rule.matches(**facts, status=None, transport=Transport.TIMEOUT)
        assert not rule.matches(**facts, status=None, transport=Transport.RESET)


class TestDefaults:
    def test_an_unmatched_graph_error_gets_the_default(self) -> None:
        assert classify(1, status=500, rules=rules_of()) is PERMANENT
        assert classify(1, rules=rules_of(default=ErrorClass.TRANSIENT)) is TRANSIENT

    @pytest.mark.parametrize("transport", ["connect", "timeout", "reset"])
    def test_an_unmatched_transport_failure_gets_the_server_error_default(
        self, transport: str
    ) -> None:
        assert classify_error(rules_of(), status=None, error=None, transport=transport) is (
            TRANSIENT
        )
        custom = rules_of(default_server_error=ErrorClass.PERMANENT)
        assert classify_error(custom, status=None, error=None, transport=transport) is PERMANENT

    def test_an_unmatched_non_json_5xx_gets_the_server_error_default(self) -> None:
        rules = rules_of(default=ErrorClass.THROTTLE)
        assert classify_error(rules, status=502, error=None, transport="not_json") is TRANSIENT
        assert classify_error(rules, status=500, error=None) is TRANSIENT

    def test_an_unmatched_non_json_4xx_gets_the_default(self) -> None:
        rules = rules_of(default=ErrorClass.THROTTLE)
        assert classify_error(rules, status=499, error=None, transport="not_json") is THROTTLE

    def test_a_graph_error_on_a_5xx_gets_the_default_not_the_server_error_one(self) -> None:
        assert classify(12, status=502, rules=rules_of()) is PERMANENT


class TestRuleValidation:
    @pytest.mark.parametrize(
        ("rule", "problem"),
        [
            ("x", "rules[0]: expected a table, got 'x'"),
            (
                {"class": "throttle", "codes": [4], "code": [4]},
                "rules[0]: unknown key 'code' (known: class, code_ranges, codes, ",
            ),
            ({"codes": [4]}, "rules[0].class: one of throttle, transient, permanent"),
            ({"class": "retry", "codes": [4]}, "rules[0].class: one of"),
            ({"class": "throttle"}, "rules[0]: has no condition"),
            ({"class": "throttle", "codes": []}, "rules[0].codes: a non-empty list of integers"),
            ({"class": "throttle", "codes": 4}, "rules[0].codes: a non-empty list"),
            ({"class": "throttle", "codes": [4, "17"]}, "rules[0].codes: a non-empty list"),
            ({"class": "throttle", "codes": [True]}, "rules[0].codes: a non-empty list"),
            ({"class": "throttle", "subcodes": [1.5]}, "rules[0].subcodes: a non-empty list"),
            ({"class": "throttle", "http_status": 500}, "rules[0].http_status: a non-empty list"),
            ({"class": "throttle", "http_status": []}, "rules[0].http_status: a non-empty list"),
            ({"class": "throttle", "http_status": [500]}, "rules[0].http_status: a non-empty"),
            ({"class": "throttle", "http_status": [[500]]}, "rules[0].http_status: a non-empty"),
            ({"class": "throttle", "http_status": [[5, 6, 7]]}, "rules[0].http_status: a non"),
            ({"class": "throttle", "http_status": [[599, 500]]}, "low <= high"),
            ({"class": "throttle", "code_ranges": [[1, 2], "x"]}, "rules[0].code_ranges: a non"),
            ({"class": "throttle", "is_transient": "yes"}, "rules[0].is_transient: true or false"),
            ({"class": "throttle", "transport": "reset"}, "rules[0].transport: a non-empty list"),
            ({"class": "throttle", "transport": []}, "rules[0].transport: a non-empty list"),
            ({"class": "throttle", "transport": ["dns"]}, "connect, timeout, reset, not_json"),
        ],
    )
    def test_a_bad_rule_is_a_problem(self, rule: Any, problem: str) -> None:
        problems = ErrorRules(rules=(rule,)).problems()
        assert len(problems) == 1
        assert problem in problems[0], problems

    def test_every_bad_key_of_every_rule_is_reported(self) -> None:
        rules = (
            {"class": "slow", "codes": ["4"], "is_transient": 1},
            {"class": "throttle", "codes": [4]},
            {"class": "transient", "subcodes": [], "transport": ["dns"]},
        )
        assert [p.split(":")[0] for p in ErrorRules(rules=rules).problems()] == [
            "rules[0].class",
            "rules[0].codes",
            "rules[0].is_transient",
            "rules[2].subcodes",
            "rules[2].transport",
        ]

    def test_the_built_in_rules_are_valid(self) -> None:
        assert SHIPPED.problems() == []

    def test_rules_compile_once_and_only_when_valid(self) -> None:
        rules = rules_of({"class": "throttle", "codes": [4]})
        assert rules.compiled is rules.compiled
        assert rules.compiled == (ErrorRule(THROTTLE, codes=frozenset({4})),)
        with pytest.raises(ValueError, match=r"rules\[0\].class"):
            _ = rules_of({"class": "nope", "codes": [4]}).compiled

    def test_the_policy_parser_builds_and_checks_the_errors_table(self) -> None:
        doc = {
            "default": "transient",
            "rules": [{"class": "throttle", "codes": [4], "http_status": [[400, 499]]}],
        }
        policy = parse({"retry.toml": {"version": 1, "errors": doc}})
        assert policy.errors == ErrorRules(
            rules=({"class": "throttle", "codes": [4], "http_status": [[400, 499]]},),
            default=ErrorClass.TRANSIENT,
        )
        assert classify(4, status=400, rules=policy.errors) is THROTTLE

    def test_the_policy_parser_reports_bad_rules_and_defaults_at_once(self) -> None:
        doc = {"default": "never", "rules": [{"class": "throttle"}]}
        with pytest.raises(ConfigError) as caught:
            parse({"retry.toml": {"version": 1, "errors": doc}})
        assert caught.value.problems[0].startswith("retry.toml [errors].default: expected one of")
        assert caught.value.problems[1:] == [
            "retry.toml [errors] rules[0]: has no condition, so it would match everything"
            " (use default)"
        ]

    def test_rules_that_are_not_tables_are_a_type_problem(self) -> None:
        with pytest.raises(ConfigError) as caught:
            parse({"retry.toml": {"version": 1, "errors": {"rules": [5]}}})
        assert caught.value.problems == [
            "retry.toml [errors].rules: expected a list of Mapping, got [5]"
        ]


class TestGraphError:
    def test_the_error_object_of_the_envelope(self) -> None:
        assert graph_error({"error": {"code": 4}}) == {"code": 4}

    @pytest.mark.parametrize("body", [None, [], "error", {"data": []}, {"error": "boom"}])
    def test_no_error_object(self, body: Any) -> None:
        assert graph_error(body) is None


# --------------------------------------------------------------------------- backoff

_policies = st.builds(
    lambda base, factor, attempts: RetryPolicy(
        attempts=attempts, base_seconds=base, cap_seconds=base * factor
    ),
    st.floats(min_value=1e-3, max_value=100),
    st.floats(min_value=1, max_value=1000),
    st.integers(min_value=1, max_value=20),
)
_attempts = st.integers(min_value=1, max_value=5000)
_jitters = st.floats(min_value=0, max_value=1, exclude_max=True)


class TestBackoff:
    def test_the_ceiling_doubles_from_base_up_to_the_cap(self) -> None:
        policy = RetryPolicy(base_seconds=0.5, cap_seconds=3)
        assert [max_delay(a, policy) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]

    def test_a_huge_attempt_number_saturates_at_the_cap(self) -> None:
        assert max_delay(10**6, RetryPolicy()) == RetryPolicy().cap_seconds

    def test_the_delay_is_the_jittered_ceiling(self) -> None:
        policy = RetryPolicy(base_seconds=1, cap_seconds=100)
        assert next_delay(3, policy, jitter=0.25) == 1.0
        assert next_delay(1, policy, jitter=0.0) == 0.0

    @pytest.mark.parametrize("attempt", [0, -1])
    def test_attempts_are_numbered_from_1(self, attempt: int) -> None:
        with pytest.raises(ValueError, match="1-based"):
            next_delay(attempt, RetryPolicy(), jitter=0.5)

    @pytest.mark.parametrize("jitter", [-0.01, 1.0, 1.5, math.nan])
    def test_jitter_outside_0_to_1_is_a_bug(self, jitter: float) -> None:
        with pytest.raises(ValueError, match="jitter"):
            next_delay(1, RetryPolicy(), jitter=jitter)

    @given(attempt=_attempts, policy=_policies, jitter=_jitters)
    def test_the_delay_is_between_0_and_the_cap(
        self, attempt: int, policy: RetryPolicy, jitter: float
    ) -> None:
        assert 0 <= next_delay(attempt, policy, jitter=jitter) <= policy.cap_seconds

    @given(attempt=_attempts, policy=_policies, jitter=_jitters)
    def test_without_jitter_the_delay_never_shrinks_as_attempts_grow(
        self, attempt: int, policy: RetryPolicy, jitter: float
    ) -> None:
        """The ceiling is monotone, so the same draw never waits less on a later try."""
        assert max_delay(attempt, policy) <= max_delay(attempt + 1, policy)
        assert next_delay(attempt, policy, jitter=jitter) <= next_delay(
            attempt + 1, policy, jitter=jitter
        )

    @given(
        attempt=_attempts,
        policy=_policies,
        jitter=_jitters,
        retry_after=st.floats(min_value=0, max_value=1e6),
    )
    def test_retry_after_is_a_floor(
        self, attempt: int, policy: RetryPolicy, jitter: float, retry_after: float
    ) -> None:
        delay = next_delay(attempt, policy, jitter=jitter, retry_after=retry_after)
        assert delay >= retry_after
        assert delay == max(next_delay(attempt, policy, jitter=jitter), retry_after)

    def test_a_regain_time_beyond_the_cap_is_waited_in_full(self) -> None:
        assert next_delay(1, RetryPolicy(cap_seconds=10), jitter=0.9, retry_after=300) == 300


class TestShouldRetry:
    POLICY = RetryPolicy(attempts=3)

    def test_a_retry_is_allowed_while_tries_are_left_and_the_wait_fits(self) -> None:
        assert should_retry(1, self.POLICY, elapsed=0, deadline=60, delay=1)
        assert should_retry(2, self.POLICY, elapsed=10, deadline=60, delay=49.9)

    def test_no_retry_after_the_last_attempt(self) -> None:
        assert not should_retry(3, self.POLICY, elapsed=0, deadline=60, delay=0)
        assert not should_retry(4, self.POLICY, elapsed=0, deadline=60, delay=0)

    def test_a_single_attempt_policy_never_retries(self) -> None:
        assert not should_retry(1, RetryPolicy(attempts=1), elapsed=0, deadline=60, delay=0)

    def test_a_wait_ending_exactly_at_the_deadline_is_refused(self) -> None:
        assert not should_retry(1, self.POLICY, elapsed=10, deadline=60, delay=50)
        assert should_retry(1, self.POLICY, elapsed=10, deadline=60, delay=49.999)

    def test_a_wait_past_the_deadline_is_refused(self) -> None:
        assert not should_retry(1, self.POLICY, elapsed=59, deadline=60, delay=300)
        assert not should_retry(1, self.POLICY, elapsed=61, deadline=60, delay=0)


class TestRetryPolicy:
    def test_the_defaults_are_valid(self) -> None:
        assert RetryPolicy().problems() == []

    @pytest.mark.parametrize(
        ("values", "problem"),
        [
            ({"attempts": 0}, "attempts: must be >= 1 (the first try counts)"),
            ({"base_seconds": 0}, "base_seconds: must be > 0"),
            ({"base_seconds": 2, "cap_seconds": 1}, "cap_seconds: must be >= base_seconds"),
            ({"budget_ratio": -0.1}, "budget_ratio: between 0 and 1"),
            ({"budget_ratio": 1.5}, "budget_ratio: between 0 and 1"),
            ({"budget_window_seconds": 0}, "budget_window_seconds: must be >= 1"),
            ({"budget_min_retries_per_second": -1}, "budget_min_retries_per_second: must be >= 0"),
        ],
    )
    def test_a_bad_value_is_a_problem(self, values: dict[str, Any], problem: str) -> None:
        assert RetryPolicy(**values).problems() == [problem]

    def test_the_policy_parser_builds_and_checks_the_retry_table(self) -> None:
        policy = parse({"r.toml": {"version": 1, "retry": {"attempts": 5, "cap_seconds": 30}}})
        assert policy.retry == RetryPolicy(attempts=5, cap_seconds=30.0)
        with pytest.raises(ConfigError) as caught:
            parse({"r.toml": {"version": 1, "retry": {"attempts": "3", "base_seconds": -1}}})
        assert caught.value.problems == [
            "r.toml [retry].attempts: expected an integer, got '3'",
            "r.toml [retry] base_seconds: must be > 0",
        ]


# --------------------------------------------------------------------------- retry budget

BUDGET = RetryPolicy(budget_ratio=0.2, budget_window_seconds=10, budget_min_retries_per_second=1)


def totals(state: BudgetState) -> tuple[int, int]:
    return sum(b.requests for b in state.buckets), sum(b.retries for b in state.buckets)


class TestBudget:
    def test_an_outage_cannot_retry_more_than_the_ratio_plus_the_floor(self) -> None:
        """1000 requests over 10 s, every one failing and wanting two retries: about 20 % of
        them are retried, not 200 %."""
        state, retried = BudgetState(), 0
        for i in range(1000):
            now = i / 100
            state = record_request(state, now)
            for _ in range(2):
                state, allowed = try_retry(state, now, BUDGET)
                retried += allowed
        assert retried <= 0.2 * 1000 + 1 * 10
        assert retried >= 0.2 * 1000 - 10  # the budget is spent, not starved
        assert totals(state) == (1000, retried)

    def test_a_long_outage_stays_within_the_budget_in_every_window(self) -> None:
        state, per_second = BudgetState(), [0] * 60
        for i in range(6000):
            now = i / 100
            state = record_request(state, now)
            state, allowed = try_retry(state, now, BUDGET)
            per_second[int(now)] += allowed
        for end in range(10, 61):
            window = sum(per_second[end - 10 : end])
            assert window <= 0.2 * 1000 + 1, (end, window)
        assert sum(per_second) >= 0.2 * 6000 - 20

    def test_the_floor_allows_retries_at_low_volume(self) -> None:
        """One request a second: 20 % would allow 2 retries in the window; the floor allows 10."""
        state, allowed_count = BudgetState(), 0
        for second in range(10):
            state = record_request(state, second)
            state, allowed = try_retry(state, second + 0.5, BUDGET)
            allowed_count += allowed
        assert allowed_count == 10
        state, allowed = try_retry(state, 9.9, BUDGET)
        assert not allowed

    def test_with_no_floor_and_no_requests_nothing_is_retried(self) -> None:
        policy = RetryPolicy(budget_min_retries_per_second=0)
        assert try_retry(BudgetState(), 0, policy) == (BudgetState(), False)

    def test_the_window_slides(self) -> None:
        state = BudgetState()
        for _ in range(10):
            state, allowed = try_retry(state, 100.0, BUDGET)
            assert allowed
        state, allowed = try_retry(state, 109.99, BUDGET)
        assert not allowed
        state, allowed = try_retry(state, 110.0, BUDGET)
        assert allowed
        assert state.buckets == (BudgetBucket(110, retries=1),)

    def test_requests_older_than_the_window_stop_counting(self) -> None:
        state = BudgetState()
        for _ in range(100):
            state = record_request(state, 0.0)
        state = record_request(state, 9.0)
        assert totals(state) == (101, 0)
        state = record_request(state, 10.0)
        assert totals(state) == (2, 0)
        assert [b.second for b in state.buckets] == [9, 10]

    def test_a_refusal_returns_the_state_with_old_buckets_dropped(self) -> None:
        full = BudgetState(10, (BudgetBucket(0, 0, 0), BudgetBucket(5, 0, 10)))
        state, allowed = try_retry(full, 12.0, BUDGET)
        assert not allowed
        assert state == BudgetState(10, (BudgetBucket(5, 0, 10),))

    def test_a_clock_step_backwards_lands_in_its_own_bucket_in_order(self) -> None:
        state = record_request(record_request(BudgetState(), 7.2), 5.9)
        assert state.buckets == (BudgetBucket(5, 1, 0), BudgetBucket(7, 1, 0))

    def test_counts_at_the_same_second_share_a_bucket(self) -> None:
        state = record_request(record_request(BudgetState(), 3.1), 3.8)
        state, _ = try_retry(state, 3.9, BUDGET)
        assert state.buckets == (BudgetBucket(3, 2, 1),)

    def test_the_policys_window_replaces_the_states(self) -> None:
        state = record_request(BudgetState(window_seconds=10), 0)
        state, allowed = try_retry(state, 3, RetryPolicy(budget_window_seconds=2))
        assert allowed
        assert state == BudgetState(2, (BudgetBucket(3, 0, 1),))

    def test_a_ratio_that_is_not_exact_in_floating_point_still_allows_its_last_retry(
        self,
    ) -> None:
        """0.29 * 100 is 28.999999999999996 in floating point; 29 retries fit."""
        policy = RetryPolicy(budget_ratio=0.29, budget_min_retries_per_second=0)
        state = BudgetState(10, (BudgetBucket(0, 100, 28),))
        state, allowed = try_retry(state, 0, policy)
        assert allowed
        assert not try_retry(state, 0, policy)[1]


class TestBudgetState:
    @given(
        window=st.integers(min_value=1, max_value=60),
        rows=st.dictionaries(
            st.integers(min_value=-(10**6), max_value=10**6),
            st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
            max_size=20,
        ),
    )
    def test_the_state_survives_a_json_round_trip(
        self, window: int, rows: dict[int, tuple[int, int]]
    ) -> None:
        state = BudgetState(window, tuple(BudgetBucket(s, *rows[s]) for s in sorted(rows)))
        assert BudgetState.from_dict(json.loads(json.dumps(state.to_dict()))) == state

    def test_the_json_form(self) -> None:
        state = BudgetState(10, (BudgetBucket(4, 2, 1),))
        assert state.to_dict() == {"window_seconds": 10, "buckets": [[4, 2, 1]]}

    def test_buckets_are_put_in_order_when_read(self) -> None:
        doc = {"window_seconds": 5, "buckets": [[9, 1, 0], [3, 0, 1]]}
        assert BudgetState.from_dict(doc).buckets == (BudgetBucket(3, 0, 1), BudgetBucket(9, 1, 0))

    @pytest.mark.parametrize(
        "doc",
        [
            {},
            {"buckets": []},
            {"window_seconds": "10", "buckets": []},
            {"window_seconds": True, "buckets": []},
            {"window_seconds": 0, "buckets": []},
            {"window_seconds": 10},
            {"window_seconds": 10, "buckets": {}},
        ],
    )
    def test_anything_but_a_state_is_refused(self, doc: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="not a retry budget state"):
            BudgetState.from_dict(doc)

    @pytest.mark.parametrize(
        "row", [[1, 2], [1, 2, 3, 4], [1, -1, 0], [1, 0, -1], [1, 2.0, 3], "x", [], None]
    )
    def test_a_bad_bucket_is_refused(self, row: Any) -> None:
        with pytest.raises(ValueError, match="not a retry budget bucket"):
            BudgetState.from_dict({"window_seconds": 10, "buckets": [row]})
