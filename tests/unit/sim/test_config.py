"""gateway.sim.config: the documented defaults, merging, and every problem reported at once."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.sim.config import (
    DEFAULT_ACCOUNTS,
    DEFAULT_TOKENS,
    AccountSpec,
    ObjectLimits,
    RateLimits,
    SimConfig,
    SimConfigError,
    TokenKind,
    TokenSpec,
    load_config,
    merge_by_key,
    parse_account,
    parse_config,
    parse_token,
    update_object_limits,
    update_rate_limits,
    version_tuple,
)


def problems_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SimConfigError) as caught:
        parse_config(doc)
    return caught.value.problems


def test_an_empty_document_is_the_documented_default_world() -> None:
    config = parse_config({})

    assert [a.id for a in config.accounts] == ["act_1001", "act_1002", "act_2001", "act_3001"]
    assert {a.id: a.account_status for a in config.accounts} == {
        "act_1001": 1,
        "act_1002": 1,
        "act_2001": 2,
        "act_3001": 3,
    }
    assert {t.token: t.kind for t in config.tokens} == {
        "sim-token-alice": TokenKind.VALID,
        "sim-token-bob": TokenKind.VALID,
        "sim-token-expired": TokenKind.EXPIRED,
        "sim-token-invalid": TokenKind.INVALID,
        "sim-token-readonly": TokenKind.NO_PERMISSION,
    }
    assert config.seed == 0
    assert (config.default_version, config.min_version) == ("v25.0", "v19.0")
    assert config.object_limits == ObjectLimits()
    assert config.rate_limits == RateLimits()
    assert config.faults == ()


def test_load_config_without_a_path_is_the_defaults() -> None:
    assert load_config(None) == parse_config({})


def test_an_extra_account_is_added_after_the_defaults() -> None:
    config = parse_config({"accounts": [{"id": "act_4001", "name": "Extra", "currency": "EUR"}]})

    assert [a.id for a in config.accounts][-1] == "act_4001"
    assert len(config.accounts) == len(DEFAULT_ACCOUNTS) + 1
    assert config.accounts[-1] == AccountSpec("act_4001", "Extra", currency="EUR")


def test_an_account_with_a_default_id_replaces_that_default_in_place() -> None:
    config = parse_config(
        {"accounts": [{"id": "act_1001", "name": "Renamed", "account_status": 3}]}
    )

    assert [a.id for a in config.accounts] == [a.id for a in DEFAULT_ACCOUNTS]
    assert config.accounts[0] == AccountSpec("act_1001", "Renamed", account_status=3)


def test_a_token_with_a_default_value_replaces_that_default() -> None:
    config = parse_config(
        {"tokens": [{"token": "sim-token-bob", "kind": "expired", "accounts": ["act_1002"]}]}
    )

    bob = {t.token: t for t in config.tokens}["sim-token-bob"]
    assert bob.kind is TokenKind.EXPIRED
    assert bob.accounts == ("act_1002",)
    assert len(config.tokens) == len(DEFAULT_TOKENS)


def test_replace_defaults_keeps_only_the_documents_accounts_and_tokens() -> None:
    config = parse_config(
        {
            "replace_defaults": True,
            "accounts": [{"id": "act_9", "name": "Only"}],
            "tokens": [{"token": "only-token"}],
        }
    )

    assert [a.id for a in config.accounts] == ["act_9"]
    assert [t.token for t in config.tokens] == ["only-token"]


def test_merge_by_key_replaces_matches_and_appends_the_rest() -> None:
    defaults = (TokenSpec("a"), TokenSpec("b"))
    extra = (TokenSpec("b", kind=TokenKind.INVALID), TokenSpec("c"))

    merged = merge_by_key(defaults, extra, "token")

    assert [(t.token, t.kind) for t in merged] == [
        ("a", TokenKind.VALID),
        ("b", TokenKind.INVALID),
        ("c", TokenKind.VALID),
    ]


def test_every_problem_in_a_document_is_listed_at_once() -> None:
    problems = problems_of(
        {
            "colour": "red",
            "seed": "seven",
            "default_version": "25.0",
            "accounts": [
                {"id": "1234", "name": "No prefix"},
                {"id": "act_5", "name": "Odd status", "account_status": 42},
            ],
            "tokens": [{"token": "t", "kind": "wizard"}],
            "object_limits": {"widgets": 3},
            "rate_limits": {"throttle_error": "999", "decay_seconds": 0},
            "faults": "not a list",
        }
    )

    text = "\n".join(problems)
    for needle in (
        "'colour'",
        "seed",
        "default_version",
        "accounts[0].id",
        "accounts[1].account_status",
        "tokens[0].kind",
        "'widgets'",
        "throttle_error",
        "decay_seconds",
        "faults",
    ):
        assert needle in text, (needle, problems)
    assert len(problems) >= 10


@pytest.mark.parametrize("version", ["25.0", "v25", "V25.0", "v25.0.1", "v25.x", 25, None])
def test_a_malformed_version_is_a_problem(version: Any) -> None:
    problems = problems_of({"default_version": version, "min_version": version})

    assert any(p.startswith("default_version") for p in problems)
    assert any(p.startswith("min_version") for p in problems)


def test_versions_compare_numerically() -> None:
    assert version_tuple("v25.0") == (25, 0)
    assert version_tuple("v9.0") < version_tuple("v19.0") < version_tuple("v25.0")
    with pytest.raises(ValueError, match="not a Graph version"):
        version_tuple("25.0")


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"accounts": [{"id": "act_1", "name": "x", "owner": "me"}]}, "accounts[0]"),
        ({"tokens": [{"token": "t", "expires": 3}]}, "tokens[0]"),
        ({"object_limits": {"ads_per_campaign": 3}}, "object_limits"),
        ({"rate_limits": {"burst": 3}}, "rate_limits"),
    ],
)
def test_an_unknown_key_is_named_with_the_known_keys(doc: dict[str, Any], where: str) -> None:
    [problem] = problems_of(doc)

    assert problem.startswith(where)
    assert "unknown key" in problem
    assert "known:" in problem


def test_an_unknown_top_level_key_lists_the_known_ones() -> None:
    [problem] = problems_of({"fault": []})

    assert "'fault'" in problem
    assert "faults" in problem


def test_a_whole_number_is_accepted_where_a_float_is_expected() -> None:
    config = parse_config({"rate_limits": {"max_score": 60, "decay_seconds": 300}})

    assert config.rate_limits.max_score == 60.0
    assert isinstance(config.rate_limits.max_score, float)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("object_limits", "ads_per_adset", True),
        ("object_limits", "ads_per_adset", 2.5),
        ("rate_limits", "tier", 3),
        ("rate_limits", "mutation_qps", "100"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_problem(section: str, key: str, value: Any) -> None:
    problems = problems_of({section: {key: value}})

    assert any(f"{section}.{key}" in p for p in problems), problems


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_score", "lots"), ("decay_seconds", None), ("block_seconds", "1m")],
)
def test_a_non_numeric_rate_limit_is_a_problem_not_a_crash(key: str, value: Any) -> None:
    problems = problems_of({"rate_limits": {key: value}})

    assert any(key in p for p in problems), problems


@pytest.mark.parametrize("key", ["campaigns_per_account", "ads_per_adset", "batch_max_ops"])
def test_an_object_limit_below_one_is_a_problem_as_in_the_control_api(key: str) -> None:
    problems = problems_of({"object_limits": {key: 0}})

    assert any(key in p for p in problems), problems


@pytest.mark.parametrize("section", ["object_limits", "rate_limits"])
def test_a_section_that_is_not_a_table_is_a_problem_not_a_crash(section: str) -> None:
    problems = problems_of({section: 5})

    assert any(section in p for p in problems), problems


@pytest.mark.parametrize("accounts", [{"id": "act_1"}, "act_1", [1]])
def test_accounts_must_be_a_list_of_tables(accounts: Any) -> None:
    problems = problems_of({"accounts": accounts})

    assert any(p.startswith("accounts") for p in problems)


def test_token_lists_and_lengths_are_checked() -> None:
    problems = problems_of(
        {"tokens": [{"token": "t", "accounts": "act_1001"}, {"token": ""}, {"token": "x" * 513}]}
    )

    assert any("tokens[0].accounts" in p for p in problems)
    assert any("tokens[1].token" in p for p in problems)
    assert any("tokens[2].token" in p for p in problems)


def test_an_account_missing_its_name_still_gets_its_other_problems_listed() -> None:
    """Every problem at once: a missing name does not hide a malformed id."""
    problems = problems_of({"accounts": [{"id": "1234", "account_status": 42}]})

    text = "\n".join(problems)
    assert "name" in text
    assert "accounts[0].id" in text
    assert "accounts[0].account_status" in text


def test_fault_rules_are_validated_together_with_the_rest() -> None:
    """A bad fault rule is reported by parse_config alongside the other problems."""
    problems = problems_of(
        {
            "accounts": [{"id": "bad", "name": "x"}],
            "faults": [{"id": "boom", "kind": "explode"}],
        }
    )

    assert any("accounts[0].id" in p for p in problems)
    assert any("boom" in p and "kind" in p for p in problems), problems


def test_valid_faults_are_kept_as_given() -> None:
    config = parse_config({"faults": [{"kind": "error", "op": "create"}]})

    assert config.faults == ({"kind": "error", "op": "create"},)


def test_a_config_is_frozen() -> None:
    config = SimConfig()

    with pytest.raises(AttributeError):
        config.seed = 3  # type: ignore[misc]  # proving the dataclass is frozen


def test_rate_limit_updates_keep_unnamed_fields() -> None:
    current = RateLimits(max_score=60.0, block_seconds=300.0)

    updated = update_rate_limits(current, {"throttle_error": "613", "decay_seconds": 10})

    assert updated == RateLimits(
        max_score=60.0, block_seconds=300.0, throttle_error="613", decay_seconds=10.0
    )


def test_a_bad_rate_limit_update_lists_every_problem() -> None:
    with pytest.raises(SimConfigError) as caught:
        update_rate_limits(RateLimits(), {"max_score": 0, "mutation_qps": 0, "nope": 1})

    text = "\n".join(caught.value.problems)
    assert "max_score" in text
    assert "mutation_qps" in text
    assert "'nope'" in text


def test_object_limit_updates_refuse_values_below_one() -> None:
    assert update_object_limits(ObjectLimits(), {"ads_per_adset": 2}).ads_per_adset == 2
    with pytest.raises(SimConfigError, match="ads_per_adset"):
        update_object_limits(ObjectLimits(), {"ads_per_adset": 0})


def test_an_object_limit_update_of_the_wrong_type_is_a_problem_not_a_crash() -> None:
    with pytest.raises(SimConfigError, match="ads_per_adset"):
        update_object_limits(ObjectLimits(), {"ads_per_adset": "many"})


def test_parse_account_and_parse_token_build_single_specs() -> None:
    assert parse_account({"id": "act_7", "name": "Seven"}) == AccountSpec("act_7", "Seven")
    token = parse_token({"token": "t7", "kind": "no_permission", "scopes": ["ads_read"]})
    assert token == TokenSpec("t7", kind=TokenKind.NO_PERMISSION, scopes=("ads_read",))
    with pytest.raises(SimConfigError):
        parse_account({"id": "7", "name": "Seven"})
    with pytest.raises(SimConfigError):
        parse_token({"token": "t", "kind": "root"})


def test_account_id_is_the_number_without_the_prefix() -> None:
    assert AccountSpec("act_1001", "x").account_id == "1001"
