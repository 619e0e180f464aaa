"""gateway.core.verify: pre-creation checks from Graph's answers (DESIGN.md §1).

Token errors follow graph-api-notes Part A §2.3 (102, 190, 104 and their subcodes); account
states §6.1; object limits §6.3 (6,000 per type, 50 ads per ad set).
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.verify import (
    ERROR,
    FAILED,
    PASSED,
    WARNING,
    Verdict,
    VerifyPolicy,
    check_account,
    check_campaign_name,
    check_limits,
    check_token,
    overall,
)

ACCOUNT = "act_1234567890"
POLICY = VerifyPolicy()
WARN = VerifyPolicy(duplicate_name="warn")


def graph_error(code: int, subcode: int | None = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"message": "msg", "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error.update(extra)
    return {"error": error}


class TestCheckToken:
    def test_a_user_answer_passes_and_names_the_user(self) -> None:
        assert check_token(200, {"id": "42", "name": "A"}) == Verdict(
            PASSED, "the access token is valid", {"user_id": "42"}
        )

    @pytest.mark.parametrize(
        ("code", "subcode"), [(190, 463), (190, 460), (102, None), (104, None)]
    )
    def test_token_error_codes_fail_with_code_and_subcode(
        self, code: int, subcode: int | None
    ) -> None:
        verdict = check_token(400, graph_error(code, subcode))
        assert verdict.status == FAILED
        assert verdict.data == {"code": code, "subcode": subcode}
        expected = f"Graph code {code}/{subcode})" if subcode else f"Graph code {code})"
        assert expected in verdict.detail
        assert verdict.detail.endswith(": msg")

    def test_a_token_error_fails_even_with_a_5xx_or_a_transient_flag(self) -> None:
        assert check_token(500, graph_error(190, 467, is_transient=True)).status == FAILED

    @pytest.mark.parametrize("status", [0, 500, 502, 503])
    def test_no_useful_answer_is_an_error_not_a_failure(self, status: int) -> None:
        verdict = check_token(status, None)
        assert verdict == Verdict(
            ERROR, f"token: Graph did not answer usefully (HTTP {status}, code None)"
        )

    def test_a_transient_graph_error_is_an_error_with_its_code(self) -> None:
        verdict = check_token(400, graph_error(2, is_transient=True))
        assert verdict == Verdict(ERROR, "token: Graph did not answer usefully (HTTP 400, code 2)")

    @pytest.mark.parametrize("body", [None, "<html>", [1]])
    def test_an_answer_that_is_not_a_json_object_is_an_error(self, body: Any) -> None:
        assert check_token(200, body) == Verdict(
            ERROR, "token: Graph's answer was not JSON (HTTP 200)"
        )

    def test_another_graph_error_fails_the_check_with_its_message(self) -> None:
        verdict = check_token(403, graph_error(10))
        assert verdict == Verdict(FAILED, "token check refused: msg", {"code": 10})

    def test_an_error_member_that_is_not_an_object_is_ignored(self) -> None:
        assert check_token(200, {"error": "x", "id": "1"}).status == PASSED


class TestCheckAccount:
    def test_an_active_account_passes(self) -> None:
        verdict = check_account(200, {"account_status": 1, "name": "n"}, ACCOUNT)
        assert verdict == Verdict(
            PASSED,
            f"ad account {ACCOUNT} is ACTIVE",
            {"account_status": 1, "disable_reason": None},
        )

    def test_a_status_given_as_a_digit_string_is_read_as_a_number(self) -> None:
        assert check_account(200, {"account_status": "1"}, ACCOUNT).status == PASSED

    @pytest.mark.parametrize(
        ("raw", "name"),
        [
            (2, "DISABLED"),
            (3, "UNSETTLED"),
            (9, "IN_GRACE_PERIOD"),
            (101, "CLOSED"),
            ("7", "PENDING_RISK_REVIEW"),
        ],
    )
    def test_a_known_non_active_status_fails_by_name(self, raw: Any, name: str) -> None:
        verdict = check_account(200, {"account_status": raw}, ACCOUNT)
        assert verdict.status == FAILED
        assert verdict.detail == (
            f"ad account {ACCOUNT} is {name} (account_status={raw}), not ACTIVE"
        )
        assert verdict.data == {"account_status": int(raw), "disable_reason": None}

    def test_a_disable_reason_is_named_in_the_failure(self) -> None:
        verdict = check_account(200, {"account_status": 2, "disable_reason": 3}, ACCOUNT)
        assert verdict.detail == (
            f"ad account {ACCOUNT} is DISABLED (account_status=2, disable_reason=3), not ACTIVE"
        )
        assert verdict.data == {"account_status": 2, "disable_reason": 3}

    def test_disable_reason_zero_means_none_and_is_not_named(self) -> None:
        verdict = check_account(200, {"account_status": 2, "disable_reason": 0}, ACCOUNT)
        assert "disable_reason" not in verdict.detail

    @pytest.mark.parametrize(
        ("raw", "shown", "number"),
        [
            (None, "None", None),  # field missing
            (True, "True", None),
            (-1, "-1", None),
            ("ACTIVE", "ACTIVE", None),
            (1.0, "1.0", None),
            (0, "0", 0),
            (201, "201", 201),  # a filter value, not a state
        ],
    )
    def test_an_unreadable_or_unknown_status_fails_showing_the_raw_value(
        self, raw: Any, shown: str, number: int | None
    ) -> None:
        verdict = check_account(200, {"account_status": raw}, ACCOUNT)
        assert verdict.status == FAILED
        assert f"is {shown} (account_status={raw})" in verdict.detail
        assert verdict.data["account_status"] == number

    def test_a_graph_error_fails_the_account_check(self) -> None:
        verdict = check_account(400, graph_error(100, 33), ACCOUNT)
        assert verdict == Verdict(
            FAILED,
            f"ad account {ACCOUNT} cannot be used with this token (Graph code 100): msg",
            {"code": 100},
        )

    def test_a_5xx_is_an_error(self) -> None:
        assert check_account(503, None, ACCOUNT).detail.startswith("account: ")
        assert check_account(503, None, ACCOUNT).status == ERROR

    def test_a_transient_graph_error_is_an_error(self) -> None:
        assert check_account(400, graph_error(4, is_transient=True), ACCOUNT).status == ERROR


class TestCheckCampaignName:
    def test_no_campaign_with_that_name_passes(self) -> None:
        verdict = check_campaign_name(200, {"data": []}, "Spring", POLICY)
        assert verdict == Verdict(PASSED, "no campaign named 'Spring' in the account")

    def test_only_exact_name_matches_count(self) -> None:
        body = {"data": [{"id": "1", "name": "spring"}, {"id": "2", "name": "Spring 2"}, "junk"]}
        assert check_campaign_name(200, body, "Spring", POLICY).status == PASSED

    @pytest.mark.parametrize("body", [{}, {"data": None}, {"data": {"id": "1"}}])
    def test_an_answer_without_a_list_of_campaigns_cannot_decide(self, body: Any) -> None:
        """No list, no verdict: the check could not run (a duplicate may exist)."""
        assert check_campaign_name(200, body, "Spring", POLICY).status == "error"

    def test_a_duplicate_name_fails_under_the_reject_policy_listing_the_ids(self) -> None:
        body = {"data": [{"id": "1", "name": "Spring"}, {"id": 2, "name": "Spring"}]}
        verdict = check_campaign_name(200, body, "Spring", POLICY)
        assert verdict == Verdict(
            FAILED,
            "2 campaign(s) named 'Spring' already exist: 1, 2",
            {"existing_ids": ["1", "2"]},
        )

    def test_a_duplicate_name_only_warns_under_the_warn_policy(self) -> None:
        body = {"data": [{"id": "1", "name": "Spring"}]}
        assert check_campaign_name(200, body, "Spring", WARN).status == WARNING

    def test_a_refused_look_up_is_an_error_not_a_failure(self) -> None:
        verdict = check_campaign_name(400, graph_error(100), "Spring", POLICY)
        assert verdict == Verdict(ERROR, "campaign_name: Graph refused the look-up: msg")

    def test_a_5xx_is_an_error(self) -> None:
        verdict = check_campaign_name(500, None, "Spring", POLICY)
        assert verdict.status == ERROR
        assert verdict.detail.startswith("campaign_name: ")


class TestCheckLimits:
    def test_counts_below_the_limits_pass_and_are_reported(self) -> None:
        counts = {"campaign": 10, "adset": 20, "ad": 30}
        verdict = check_limits(counts, {"campaign": 1, "adset": 2, "ad": 4}, POLICY)
        assert verdict == Verdict(
            PASSED,
            "the account stays below its object limits",
            {"counts": counts, "limits": {"campaign": 6000, "adset": 6000, "ad": 6000}},
        )

    def test_reaching_the_limit_exactly_passes(self) -> None:
        assert check_limits({"adset": 5999}, {"adset": 1}, POLICY).status == PASSED

    def test_passing_a_limit_fails_naming_the_type(self) -> None:
        verdict = check_limits({"adset": 5999}, {"adset": 2}, POLICY)
        assert verdict.status == FAILED
        assert verdict.detail == (
            "the account would pass its object limits: adset: 5999 live + 2 wanted > limit 6000"
        )

    def test_every_limit_passed_is_listed(self) -> None:
        policy = VerifyPolicy(limits={"campaign": 1, "adset": 1})
        verdict = check_limits({"campaign": 1, "adset": 1}, {"campaign": 1, "adset": 1}, policy)
        assert verdict.detail.count("live +") == 2

    def test_an_uncounted_type_the_job_creates_is_an_error(self) -> None:
        verdict = check_limits({"campaign": 1, "adset": None}, {"adset": 1, "ad": 1}, POLICY)
        assert verdict == Verdict(ERROR, "object_limits: could not count adset, ad on Graph")

    def test_an_uncounted_type_the_job_does_not_create_is_ignored(self) -> None:
        verdict = check_limits({"campaign": 5, "adset": None}, {"campaign": 1}, POLICY)
        assert verdict.status == PASSED

    def test_types_without_a_limit_are_not_checked(self) -> None:
        verdict = check_limits({}, {"adcreative": 10**6}, POLICY)
        assert verdict.status == PASSED

    def test_more_ads_per_new_ad_set_than_allowed_fails(self) -> None:
        counts = {"campaign": 0, "adset": 0, "ad": 0}
        verdict = check_limits(counts, {"adset": 2, "ad": 101}, POLICY)
        assert verdict.status == FAILED
        assert "ad: 50.5 per ad set > limit 50" in verdict.detail

    def test_exactly_the_allowed_ads_per_ad_set_pass(self) -> None:
        counts = {"campaign": 0, "adset": 0, "ad": 0}
        assert check_limits(counts, {"adset": 2, "ad": 100}, POLICY).status == PASSED

    def test_ads_without_new_ad_sets_count_as_one_ad_set(self) -> None:
        verdict = check_limits({"ad": 0}, {"ad": 51}, POLICY)
        assert "ad: 51 per ad set > limit 50" in verdict.detail
        verdict = check_limits({"ad": 0, "adset": 0}, {"ad": 51, "adset": 0}, POLICY)
        assert "ad: 51 per ad set > limit 50" in verdict.detail


class TestOverall:
    @pytest.mark.parametrize(
        ("statuses", "expected"),
        [
            ([], PASSED),
            ([PASSED, PASSED], PASSED),
            ([PASSED, WARNING], PASSED),
            ([PASSED, ERROR], ERROR),
            ([ERROR, FAILED], FAILED),
            ([WARNING, FAILED, PASSED], FAILED),
        ],
    )
    def test_failed_beats_error_beats_passed_and_warnings_pass(
        self, statuses: list[str], expected: str
    ) -> None:
        verdicts = {f"check{i}": Verdict(s, "") for i, s in enumerate(statuses)}
        assert overall(verdicts) == expected


def test_the_default_policy_follows_the_documented_limits() -> None:
    """graph-api-notes §6.3: 6,000 per type in a regular account, 50 ads per ad set."""
    assert dict(POLICY.limits) == {"campaign": 6000, "adset": 6000, "ad": 6000}
    assert POLICY.ads_per_adset == 50
    assert POLICY.duplicate_name == "reject"
