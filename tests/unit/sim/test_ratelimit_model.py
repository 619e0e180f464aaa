"""gateway.sim.ratelimit: score decay, blocks, mutation QPS, the app limit, usage headers.

Every call passes `now` explicitly; the numbers follow graph-api-notes §3.5 (reads 1 point,
writes 3, linear decay to zero over the decay window, a block once the maximum is reached).
"""

from __future__ import annotations

import json

import pytest

from gateway.sim.config import RateLimits
from gateway.sim.ratelimit import RateModel

T0 = 1_000.0
# Graph's development tier: 60 points decaying over 300 s (0.2 points/s), a 300 s block.
DEV = RateLimits(
    tier="development_access", max_score=60.0, decay_seconds=300.0, block_seconds=300.0
)


def charge_many(model: RateModel, n: int, *, write: bool, now: float, account: str = "1") -> None:
    for _ in range(n):
        assert model.charge(account, write=write, mutation=False, now=now) is None


def score(model: RateModel, account: str, now: float) -> float:
    value: float = model.snapshot(now=now)["accounts"][f"act_{account}"]["score"]
    return value


class TestScore:
    def test_reads_cost_one_point_and_writes_three(self) -> None:
        model = RateModel(DEV)

        charge_many(model, 2, write=True, now=T0)
        charge_many(model, 1, write=False, now=T0)

        assert score(model, "1", T0) == 7.0

    def test_the_score_decays_linearly_to_zero(self) -> None:
        model = RateModel(DEV)
        charge_many(model, 10, write=True, now=T0)  # 30 points

        assert score(model, "1", T0 + 10) == pytest.approx(28.0)
        assert score(model, "1", T0 + 100) == pytest.approx(10.0)
        assert score(model, "1", T0 + 1_000) == 0.0

    def test_accounts_have_separate_scores(self) -> None:
        model = RateModel(DEV)
        charge_many(model, 5, write=True, now=T0, account="1")
        charge_many(model, 1, write=False, now=T0, account="2")

        assert score(model, "1", T0) == 15.0
        assert score(model, "2", T0) == 1.0

    def test_calls_without_an_account_only_count_for_the_app(self) -> None:
        model = RateModel(DEV)

        assert model.charge(None, write=True, mutation=True, now=T0) is None
        assert model.snapshot(now=T0) == {"app_calls_last_hour": 1, "accounts": {}}


class TestBlock:
    def test_the_call_that_would_pass_the_maximum_is_throttled_and_blocks(self) -> None:
        model = RateModel(DEV)
        charge_many(model, 20, write=True, now=T0)  # exactly 60

        err = model.charge("1", write=False, mutation=False, now=T0)

        assert err is not None
        assert (err.status, err.code, err.subcode) == (400, 80004, 2446079)
        assert model.snapshot(now=T0)["accounts"]["act_1"]["blocked_for_seconds"] == 300.0

    def test_a_block_lasts_block_seconds_whatever_the_decay(self) -> None:
        model = RateModel(DEV)
        model.block("1", 300.0, now=T0)

        assert model.charge("1", write=False, mutation=False, now=T0 + 299.9) is not None
        assert model.charge("1", write=False, mutation=False, now=T0 + 300.0) is None

    def test_blocking_one_account_leaves_the_others_alone(self) -> None:
        model = RateModel(DEV)
        model.block("1", 60.0, now=T0)

        assert model.charge("2", write=True, mutation=False, now=T0) is None

    def test_a_shorter_block_does_not_shorten_a_longer_one(self) -> None:
        model = RateModel(DEV)
        model.block("1", 300.0, now=T0)
        model.block("1", 10.0, now=T0)

        assert model.charge("1", write=False, mutation=False, now=T0 + 100) is not None

    @pytest.mark.parametrize(
        ("throttle_error", "code", "subcode"),
        [("80004", 80004, 2446079), ("17", 17, 2446079), ("613", 613, 1487742)],
    )
    def test_the_throttle_error_is_configurable(
        self, throttle_error: str, code: int, subcode: int
    ) -> None:
        model = RateModel(RateLimits(throttle_error=throttle_error))
        model.block("1", 60.0, now=T0)

        err = model.charge("1", write=False, mutation=False, now=T0)

        assert err is not None
        assert (err.code, err.subcode) == (code, subcode)


class TestMutationQps:
    def test_mutations_above_the_per_second_limit_get_613_5044001(self) -> None:
        model = RateModel(RateLimits(mutation_qps=3))

        results = [model.charge("1", write=True, mutation=True, now=T0 + 0.1 * i) for i in range(4)]

        assert results[:3] == [None, None, None]
        err = results[3]
        assert err is not None
        assert (err.status, err.code, err.subcode) == (400, 613, 5044001)

    def test_the_window_is_one_second(self) -> None:
        model = RateModel(RateLimits(mutation_qps=2))
        for _ in range(2):
            assert model.charge("1", write=True, mutation=True, now=T0) is None

        assert model.charge("1", write=True, mutation=True, now=T0 + 0.99) is not None
        assert model.charge("1", write=True, mutation=True, now=T0 + 1.0) is None

    def test_reads_and_plain_writes_do_not_count_as_mutations(self) -> None:
        model = RateModel(RateLimits(mutation_qps=1))

        for _ in range(5):
            assert model.charge("1", write=False, mutation=False, now=T0) is None
            assert model.charge("1", write=True, mutation=False, now=T0) is None
        assert model.charge("1", write=True, mutation=True, now=T0) is None


class TestAppLimit:
    def test_calls_above_the_hourly_allowance_get_code_4(self) -> None:
        model = RateModel(RateLimits(app_calls_per_hour=5))
        for i in range(5):
            assert model.charge(str(i), write=False, mutation=False, now=T0) is None

        err = model.charge("9", write=False, mutation=False, now=T0 + 10)

        assert err is not None
        assert (err.status, err.code, err.is_transient) == (403, 4, True)

    def test_the_hour_rolls(self) -> None:
        model = RateModel(RateLimits(app_calls_per_hour=2))
        model.charge(None, write=False, mutation=False, now=T0)
        model.charge(None, write=False, mutation=False, now=T0 + 1800)

        assert model.charge(None, write=False, mutation=False, now=T0 + 3599) is not None
        assert model.charge(None, write=False, mutation=False, now=T0 + 3600) is None


class TestHeaders:
    def test_usage_headers_report_percentages_for_each_account(self) -> None:
        model = RateModel(DEV)
        charge_many(model, 10, write=True, now=T0)  # 30 of 60 points

        headers = model.headers(["1"], now=T0)

        buc = json.loads(headers["X-Business-Use-Case-Usage"])
        assert buc == {
            "1": [
                {
                    "type": "ads_management",
                    "call_count": 50,
                    "total_cputime": 50,
                    "total_time": 50,
                    "estimated_time_to_regain_access": 0,
                    "ads_api_access_tier": "development_access",
                }
            ]
        }
        assert json.loads(headers["X-Ad-Account-Usage"]) == {
            "acc_id_util_pct": 50.0,
            "reset_time_duration": 150,  # 30 points at 0.2 points/s
            "ads_api_access_tier": "development_access",
        }
        assert set(json.loads(headers["X-App-Usage"])) == {
            "call_count",
            "total_cputime",
            "total_time",
        }

    def test_a_blocked_account_reports_minutes_to_regain_access(self) -> None:
        model = RateModel(DEV)
        model.block("1", 150.0, now=T0)

        headers = model.headers(["1"], now=T0)

        [entry] = json.loads(headers["X-Business-Use-Case-Usage"])["1"]
        assert entry["call_count"] == 100
        assert entry["estimated_time_to_regain_access"] == 3  # 150 s, rounded up to minutes
        assert json.loads(headers["X-Ad-Account-Usage"])["reset_time_duration"] == 150

    def test_app_usage_is_the_percent_of_the_hourly_allowance(self) -> None:
        model = RateModel(RateLimits(app_calls_per_hour=200))
        for _ in range(50):
            model.charge(None, write=False, mutation=False, now=T0)

        usage = json.loads(model.headers([], now=T0)["X-App-Usage"])

        assert usage == {"call_count": 25, "total_cputime": 25, "total_time": 25}

    def test_headers_are_omitted_below_the_minimum_percent(self) -> None:
        model = RateModel(RateLimits(max_score=100.0, header_min_pct=10.0, app_calls_per_hour=1000))
        charge_many(model, 3, write=True, now=T0)  # 9 %

        assert model.headers(["1"], now=T0) == {}
        charge_many(model, 1, write=True, now=T0)  # 12 %
        assert "X-Business-Use-Case-Usage" in model.headers(["1"], now=T0)

    def test_several_accounts_share_one_buc_header(self) -> None:
        model = RateModel(DEV)
        charge_many(model, 1, write=True, now=T0, account="1")
        charge_many(model, 1, write=True, now=T0, account="2")

        buc = json.loads(model.headers(["2", "1", "2"], now=T0)["X-Business-Use-Case-Usage"])

        assert sorted(buc) == ["1", "2"]
