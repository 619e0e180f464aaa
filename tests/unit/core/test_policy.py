"""gateway.core.policy: policy documents parsed into one immutable PolicySet.

Documents are what `tomllib` returns for each file, keyed by file name; every problem in every
file is reported at once in one ConfigError.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.classify import DEFAULT_RULES, CreateRules
from gateway.core.policy import (
    _TABLES,
    POLICY_VERSION,
    CapsPolicy,
    ClassificationPolicy,
    IdempotencyPolicy,
    LedgerPolicy,
    PolicySet,
    ProxyPolicy,
    RecoveryPolicy,
    UpstreamPolicy,
    _check,
    parse,
)
from gateway.core.verify import VerifyPolicy
from gateway.errors import ConfigError


def problems_of(documents: dict[str, dict[str, Any]]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(documents)
    return caught.value.problems


def one_table(table: str, value: Any, name: str = "p.toml") -> dict[str, dict[str, Any]]:
    return {name: {"version": POLICY_VERSION, table: value}}


class TestParse:
    def test_no_documents_give_the_default_policy_set(self) -> None:
        assert parse({}) == PolicySet()

    def test_a_file_with_only_a_version_changes_nothing(self) -> None:
        assert parse({"empty.toml": {"version": 1}}) == PolicySet()

    def test_tables_from_several_files_are_combined(self) -> None:
        policy = parse(
            {
                "upstream.toml": {"version": 1, "upstream": {"deadline_seconds": 90}},
                "jobs.toml": {
                    "version": 1,
                    "verification": {"duplicate_name": "warn", "limits": {"ad": 100}},
                    "caps": {"adsets_per_campaign": 5},
                    "idempotency": {"lease_seconds": 300},
                    "recovery": {"give_up_seconds": 60},
                },
                "proxy.toml": {
                    "version": 1,
                    "proxy": {"backlog": 512},
                    "ledger": {"pool_min_size": 1, "pool_max_size": 1},
                },
                "classification.toml": {
                    "version": 1,
                    "classification": {"edges": {"campaigns": "campaign"}, "copies": False},
                },
            }
        )
        assert policy.upstream == UpstreamPolicy(deadline_seconds=90.0)
        assert policy.verification == VerifyPolicy(duplicate_name="warn", limits={"ad": 100})
        assert policy.caps == CapsPolicy(adsets_per_campaign=5)
        assert policy.idempotency == IdempotencyPolicy(lease_seconds=300.0)
        assert policy.recovery == RecoveryPolicy(give_up_seconds=60.0)
        assert policy.proxy == ProxyPolicy(backlog=512)
        assert policy.ledger == LedgerPolicy(pool_min_size=1, pool_max_size=1)
        assert policy.classification == ClassificationPolicy(
            edges={"campaigns": "campaign"}, copies=False
        )

    def test_a_policy_error_is_a_config_error_and_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="version = 1 is required"):
            parse({"p.toml": {}})

    @pytest.mark.parametrize("version", [None, 2, 0, "1"])
    def test_every_file_needs_version_1(self, version: Any) -> None:
        doc = {} if version is None else {"version": version}
        assert problems_of({"p.toml": doc}) == ["p.toml: version = 1 is required"]

    def test_an_unknown_table_is_a_problem_naming_the_known_ones(self) -> None:
        # Built from the registry, so that a newly registered table does not break this test.
        known = ", ".join(sorted(_TABLES))
        assert problems_of(one_table("retries", {})) == [
            f"p.toml: unknown table [retries] (known: {known})"
        ]
        assert {"caps", "classification", "errors", "retry", "upstream"} <= set(_TABLES)

    def test_a_table_defined_in_two_files_is_a_problem_naming_the_first(self) -> None:
        documents = {
            "b.toml": {"version": 1, "upstream": {"deadline_seconds": 100}},
            "a.toml": {"version": 1, "upstream": {"deadline_seconds": 50}},
        }
        assert problems_of(documents) == ["b.toml: [upstream] is already defined in a.toml"]

    def test_a_lease_or_in_flight_window_inside_the_deadline_is_a_problem(self) -> None:
        """A key lease or in-flight window shorter than a request's deadline would let a repeat
        or the recovery worker act on a create that is still running."""
        problems = problems_of(one_table("upstream", {"deadline_seconds": 500}))
        assert any("lease_seconds must exceed" in p for p in problems)
        assert any("in_flight_seconds must exceed" in p for p in problems)

    def test_a_table_that_is_not_a_table_is_one_problem(self) -> None:
        assert problems_of(one_table("upstream", 5)) == [
            "p.toml [upstream]: expected a table, got 5"
        ]

    def test_a_wrong_type_does_not_hide_a_bad_range_in_another_key(self) -> None:
        doc = {"connect_timeout_seconds": "5", "deadline_seconds": -1}
        assert problems_of(one_table("upstream", doc)) == [
            "p.toml [upstream].connect_timeout_seconds: expected a number, got '5'",
            "p.toml [upstream] deadline_seconds: must be > 0",
            "p.toml [upstream] per_try_timeout_seconds: must not exceed deadline_seconds",
        ]

    def test_an_unknown_key_does_not_hide_a_bad_range_in_another_key(self) -> None:
        doc = {"backlogg": 5, "backlog": 0}
        problems = problems_of(one_table("proxy", doc))
        assert problems[0].startswith("p.toml [proxy]: unknown key 'backlogg' (known: ")
        assert problems[1:] == ["p.toml [proxy] backlog: must be >= 1"]

    def test_range_checks_on_a_table_with_a_type_error_use_defaults_for_the_bad_key(
        self,
    ) -> None:
        # per_try (30 by default) is compared with the well-typed deadline of 10.
        doc = {"per_try_timeout_seconds": True, "deadline_seconds": 10}
        assert problems_of(one_table("upstream", doc)) == [
            "p.toml [upstream].per_try_timeout_seconds: expected a number, got True",
            "p.toml [upstream] per_try_timeout_seconds: must not exceed deadline_seconds",
        ]

    def test_every_problem_in_every_file_is_reported_at_once(self) -> None:
        documents: dict[str, dict[str, Any]] = {
            "a.toml": {"upstream": {"deadline_seconds": 0}},
            "b.toml": {"version": 1, "ledger": {"pool_min_size": 0}, "bogus": {}},
            "c.toml": {"version": 1, "examples": "x"},
        }
        problems = problems_of(documents)
        assert problems[0] == "a.toml: version = 1 is required"
        assert "a.toml [upstream] deadline_seconds: must be > 0" in problems
        assert "b.toml [ledger] pool_min_size/pool_max_size: need 1 <= min <= max" in problems
        assert any(p.startswith("b.toml: unknown table [bogus]") for p in problems)
        assert problems[-1] == "c.toml: [[examples]] must be tables"

    def test_the_error_message_joins_every_problem(self) -> None:
        with pytest.raises(ConfigError) as caught:
            parse({"a.toml": {}, "b.toml": {"version": 1, "nope": {}}})
        assert str(caught.value).startswith("a.toml: version = 1 is required; b.toml: unknown")


class TestExamples:
    def test_each_files_examples_are_collected_by_file_name(self) -> None:
        first = {"method": "POST", "path": "/act_1/campaigns", "expect": "create"}
        second = {"method": "GET", "path": "/me", "expect": "passthrough"}
        policy = parse(
            {
                "classification.toml": {"version": 1, "examples": [first, second]},
                "proxy.toml": {"version": 1, "proxy": {}, "examples": []},
                "upstream.toml": {"version": 1},
            }
        )
        assert policy.examples == {"classification.toml": (first, second), "proxy.toml": ()}

    @pytest.mark.parametrize("examples", [{"a": 1}, "x", [{"a": 1}, "x"], [[]]])
    def test_examples_that_are_not_a_list_of_tables_are_a_problem(self, examples: Any) -> None:
        assert problems_of({"p.toml": {"version": 1, "examples": examples}}) == [
            "p.toml: [[examples]] must be tables"
        ]


class TestUpstreamRanges:
    @pytest.mark.parametrize(
        "name", ["connect_timeout_seconds", "per_try_timeout_seconds", "deadline_seconds"]
    )
    @pytest.mark.parametrize("value", [0, -1.5])
    def test_every_timeout_must_be_positive(self, name: str, value: float) -> None:
        doc = {name: value}
        assert f"{name}: must be > 0" in _check("upstream", UpstreamPolicy(**doc))

    def test_a_try_may_not_outlast_the_deadline(self) -> None:
        assert _check("upstream", UpstreamPolicy(per_try_timeout_seconds=61)) == [
            "per_try_timeout_seconds: must not exceed deadline_seconds"
        ]

    def test_a_try_as_long_as_the_deadline_is_fine(self) -> None:
        assert _check("upstream", UpstreamPolicy(per_try_timeout_seconds=60)) == []


class TestProxyRanges:
    @pytest.mark.parametrize("name", ["max_body_bytes", "max_upload_bytes", "backlog"])
    def test_sizes_and_backlog_must_be_at_least_1(self, name: str) -> None:
        assert _check("proxy", ProxyPolicy(**{name: 0})) == [f"{name}: must be >= 1"]
        assert _check("proxy", ProxyPolicy(**{name: 1})) == []

    @pytest.mark.parametrize("name", ["upstream_pool_size", "upstream_pool_per_host"])
    def test_pool_sizes_may_be_0_for_unlimited_but_not_negative(self, name: str) -> None:
        assert _check("proxy", ProxyPolicy(**{name: 0})) == []
        assert _check("proxy", ProxyPolicy(**{name: -1})) == [
            f"{name}: must be >= 0 (0 = unlimited)"
        ]

    @pytest.mark.parametrize("seconds", [5, 4.9, 0])
    def test_client_keepalive_must_stay_above_the_sdks_5_second_reuse(self, seconds: float) -> None:
        assert _check("proxy", ProxyPolicy(client_keepalive_seconds=seconds)) == [
            "client_keepalive_seconds: must stay above the SDKs' 5 s idle reuse"
        ]

    def test_the_defaults_are_in_range(self) -> None:
        assert _check("proxy", ProxyPolicy(client_keepalive_seconds=5.1)) == []


class TestLedgerRanges:
    @pytest.mark.parametrize(("low", "high"), [(0, 5), (6, 5), (-1, -1)])
    def test_pool_sizes_need_1_at_least_and_min_not_above_max(self, low: int, high: int) -> None:
        assert _check("ledger", LedgerPolicy(pool_min_size=low, pool_max_size=high)) == [
            "pool_min_size/pool_max_size: need 1 <= min <= max"
        ]

    @pytest.mark.parametrize(("low", "high"), [(1, 1), (2, 50)])
    def test_sizes_in_order_are_fine(self, low: int, high: int) -> None:
        assert _check("ledger", LedgerPolicy(pool_min_size=low, pool_max_size=high)) == []


class TestVerificationRanges:
    def test_the_defaults_are_in_range(self) -> None:
        assert _check("verification", VerifyPolicy()) == []

    def test_duplicate_name_is_reject_or_warn(self) -> None:
        assert _check("verification", VerifyPolicy(duplicate_name="warn")) == []
        assert _check("verification", VerifyPolicy(duplicate_name="ignore")) == [
            "duplicate_name: 'reject' or 'warn'"
        ]

    @pytest.mark.parametrize("limit", [0, -5, True, "100", 1.5])
    def test_every_limit_is_a_positive_integer(self, limit: Any) -> None:
        policy = VerifyPolicy(limits={"ad": limit, "adset": 10})
        assert _check("verification", policy) == ["limits.ad: a positive integer"]

    @pytest.mark.parametrize(
        "changes", [{"attempts": 0}, {"ads_per_adset": 0}, {"cache_seconds": -1.0}]
    )
    def test_attempts_and_ads_per_adset_are_at_least_1_and_cache_not_negative(
        self, changes: dict[str, Any]
    ) -> None:
        assert _check("verification", VerifyPolicy(**changes)) == [
            "attempts, ads_per_adset >= 1 and cache_seconds >= 0"
        ]

    def test_a_zero_cache_is_fine(self) -> None:
        assert _check("verification", VerifyPolicy(cache_seconds=0.0)) == []

    def test_a_wrongly_typed_limit_is_reported_through_parse(self) -> None:
        assert problems_of(one_table("verification", {"limits": {"ad": "many"}})) == [
            "p.toml [verification].limits: expected Mapping, got {'ad': 'many'}"
        ]


class TestIdempotencyAndRecoveryRanges:
    @pytest.mark.parametrize("name", ["retention_hours", "lease_seconds", "wait_seconds"])
    @pytest.mark.parametrize("value", [0, -1])
    def test_every_idempotency_duration_must_be_positive(self, name: str, value: float) -> None:
        assert _check("idempotency", IdempotencyPolicy(**{name: value})) == [f"{name}: must be > 0"]

    @pytest.mark.parametrize(
        "name",
        ["interval_seconds", "in_flight_seconds", "clock_skew_seconds", "give_up_seconds"],
    )
    def test_every_recovery_duration_must_be_positive(self, name: str) -> None:
        assert _check("recovery", RecoveryPolicy(**{name: 0})) == [f"{name}: must be > 0"]

    def test_the_defaults_are_in_range(self) -> None:
        assert _check("idempotency", IdempotencyPolicy()) == []
        assert _check("recovery", RecoveryPolicy()) == []


class TestCapsRanges:
    @pytest.mark.parametrize("name", ["adsets_per_campaign", "ads_per_adset"])
    def test_a_cap_of_0_turns_it_off_and_a_negative_cap_is_a_problem(self, name: str) -> None:
        assert _check("caps", CapsPolicy(**{name: 0})) == []
        assert _check("caps", CapsPolicy(**{name: 50})) == []
        assert _check("caps", CapsPolicy(**{name: -1})) == [f"{name}: must be >= 0 (0 = no cap)"]

    def test_caps_are_off_by_default(self) -> None:
        assert CapsPolicy() == CapsPolicy(adsets_per_campaign=0, ads_per_adset=0)


class TestClassificationRanges:
    def test_the_default_edges_are_valid(self) -> None:
        assert _check("classification", ClassificationPolicy()) == []

    @pytest.mark.parametrize("kind", ["widget", 5, None])
    def test_an_edge_must_map_to_a_known_entity_type(self, kind: Any) -> None:
        policy = ClassificationPolicy(edges={"widgets": kind})
        assert _check("classification", policy) == [
            "edges.widgets: one of ['ad', 'adcreative', 'adimage', 'adset', 'advideo', 'campaign']"
        ]

    @pytest.mark.parametrize("ops", [0, 51])
    def test_batch_max_ops_is_between_1_and_graphs_50(self, ops: int) -> None:
        assert _check("classification", ClassificationPolicy(batch_max_ops=ops)) == [
            "batch_max_ops: between 1 and Graph's limit of 50"
        ]

    @pytest.mark.parametrize("ops", [1, 50])
    def test_batch_max_ops_at_the_bounds_is_fine(self, ops: int) -> None:
        assert _check("classification", ClassificationPolicy(batch_max_ops=ops)) == []

    def test_the_policy_gives_the_classifiers_rules(self) -> None:
        policy = ClassificationPolicy(edges={"adsets": "adset"}, copies=False, batch_max_ops=10)
        assert policy.rules() == CreateRules(
            edges={"adsets": "adset"}, copies=False, batch_max_ops=10
        )

    def test_the_default_rules_are_the_classifiers_defaults(self) -> None:
        assert ClassificationPolicy().rules() == CreateRules(
            edges=dict(DEFAULT_RULES.edges), copies=True, batch_max_ops=50
        )


def test_a_table_without_range_rules_has_no_range_problems() -> None:
    """Only reachable directly: parse refuses unknown tables before range checks."""
    assert _check("examples", object()) == []
