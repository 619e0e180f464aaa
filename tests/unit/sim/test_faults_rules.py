"""gateway.sim.faults: parsing rules, matching operations, and deterministic firing."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.sim.config import SimConfigError
from gateway.sim.faults import (
    Distribution,
    FaultBook,
    FaultKind,
    FaultRule,
    Operation,
    parse_rule,
)


def op(
    label: str = "create:campaign",
    *,
    method: str = "POST",
    path: str = "act_1001/campaigns",
    account: str | None = "act_1001",
    in_batch: bool = False,
) -> Operation:
    name, _, entity = label.partition(":")
    return Operation(name, entity or None, method, path, account, in_batch)


def problems_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SimConfigError) as caught:
        parse_rule(doc, default_id="f1")
    return caught.value.problems


def fired_pattern(book: FaultBook, operation: Operation, n: int) -> list[bool]:
    return [bool(book.fire(operation)) for _ in range(n)]


class TestParseRule:
    def test_a_bare_kind_gets_the_documented_defaults(self) -> None:
        rule = parse_rule({"kind": "error"}, default_id="f9")

        assert rule == FaultRule(FaultKind.ERROR, id="f9")
        assert (rule.status, rule.code, rule.is_transient) == (500, 2, True)
        assert (rule.op, rule.after, rule.probability, rule.times) == ("*", 0, 1.0, None)

    def test_an_explicit_id_wins_over_the_default(self) -> None:
        assert parse_rule({"kind": "latency", "id": "slow"}, default_id="f1").id == "slow"

    def test_kind_is_required(self) -> None:
        assert any("'kind' is required" in p for p in problems_of({"op": "create"}))

    def test_every_problem_is_listed_at_once(self) -> None:
        problems = problems_of(
            {
                "kind": "explode",
                "distribution": "bimodal",
                "op": "frobnicate",
                "probability": 1.5,
                "preset": "nope",
                "after": -1,
                "times": -2,
                "status": "500",
                "colour": "red",
            }
        )

        text = "\n".join(problems)
        for needle in (
            "kind",
            "distribution",
            ".op",
            "probability",
            "preset",
            "after",
            "times",
            "status",
            "'colour'",
        ):
            assert needle in text, (needle, problems)

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("times", "twice"),
            ("subcode", "x"),
            ("in_batch", "yes"),
            ("account", 1002),
            ("method", 1),
            ("path", ["act_*"]),
            ("latency_max_ms", "slow"),
            ("preset", 3),
        ],
    )
    def test_fields_that_default_to_none_are_type_checked_too(self, key: str, value: Any) -> None:
        problems = problems_of({"kind": "error", key: value})

        assert any(key in p for p in problems), problems

    def test_a_whole_number_is_accepted_for_a_float_field(self) -> None:
        rule = parse_rule({"kind": "latency", "latency_ms": 200, "probability": 1}, default_id="x")

        assert rule.latency_ms == 200.0
        assert isinstance(rule.latency_ms, float)
        assert rule.probability == 1.0

    def test_a_bool_is_not_accepted_for_an_int_field(self) -> None:
        assert any("after" in p for p in problems_of({"kind": "error", "after": True}))

    @pytest.mark.parametrize("op_name", ["*", "create", "create:adset", "batch", "other"])
    def test_known_op_selectors_are_accepted(self, op_name: str) -> None:
        assert parse_rule({"kind": "error", "op": op_name}, default_id="x").op == op_name

    def test_to_dict_parses_back_to_the_same_rule(self) -> None:
        rule = parse_rule(
            {
                "kind": "latency",
                "id": "r",
                "op": "create:ad",
                "distribution": "uniform",
                "latency_ms": 5,
                "latency_max_ms": 9.0,
                "times": 2,
            },
            default_id="x",
        )

        assert parse_rule(rule.to_dict(), default_id="y") == rule


class TestMatches:
    @pytest.mark.parametrize(
        ("selector", "label", "expected"),
        [
            ("*", "read:campaign", True),
            ("create", "create:campaign", True),
            ("create", "create:adset", True),
            ("create", "update:adset", False),
            ("create:adset", "create:adset", True),
            ("create:adset", "create:campaign", False),
            ("create:adset", "create", False),
            ("batch", "batch", True),
        ],
    )
    def test_op_selector(self, selector: str, label: str, expected: bool) -> None:
        rule = FaultRule(FaultKind.ERROR, op=selector)

        assert rule.matches(op(label)) is expected

    def test_account_selector(self) -> None:
        rule = FaultRule(FaultKind.ERROR, account="act_1002")

        assert rule.matches(op(account="act_1002"))
        assert not rule.matches(op(account="act_1001"))
        assert not rule.matches(op(account=None))

    def test_method_selector_ignores_case(self) -> None:
        rule = FaultRule(FaultKind.ERROR, method="post")

        assert rule.matches(op(method="POST"))
        assert not rule.matches(op("read:campaign", method="GET"))

    @pytest.mark.parametrize(
        ("pattern", "path", "expected"),
        [
            ("act_*/ads", "act_1001/ads", True),
            ("act_*/ads", "act_1001/adsets", False),
            ("act_*/ad*", "act_1001/adsets", True),
            ("act_1001/*", "act_1001/campaigns", True),
            ("act_1001/*", "act_1002/campaigns", False),
            ("120*", "120200000000000001", True),
        ],
    )
    def test_path_selector_is_a_case_sensitive_glob(
        self, pattern: str, path: str, expected: bool
    ) -> None:
        assert FaultRule(FaultKind.ERROR, path=pattern).matches(op(path=path)) is expected

    def test_in_batch_selector(self) -> None:
        inside, outside = op(in_batch=True), op(in_batch=False)

        assert FaultRule(FaultKind.ERROR, in_batch=True).matches(inside)
        assert not FaultRule(FaultKind.ERROR, in_batch=True).matches(outside)
        assert FaultRule(FaultKind.ERROR, in_batch=False).matches(outside)
        assert not FaultRule(FaultKind.ERROR, in_batch=False).matches(inside)
        assert FaultRule(FaultKind.ERROR).matches(inside)

    def test_operation_label_includes_the_entity_when_there_is_one(self) -> None:
        assert op("create:adset").label == "create:adset"
        assert op("batch").label == "batch"


class TestFaultBook:
    def test_after_skips_the_first_matches_and_times_caps_the_firings(self) -> None:
        book = FaultBook(seed=0)
        book.add({"kind": "error", "after": 2, "times": 2})

        assert fired_pattern(book, op(), 6) == [False, False, True, True, False, False]
        [snap] = book.snapshot()
        assert (snap["matched"], snap["fired"]) == (6, 2)

    def test_operations_that_do_not_match_are_not_counted(self) -> None:
        book = FaultBook(seed=0)
        book.add({"kind": "error", "op": "create:adset", "after": 1})

        assert book.fire(op("create:campaign")) == []
        assert book.fire(op("create:adset")) == []
        assert len(book.fire(op("create:adset"))) == 1
        assert book.snapshot()[0]["matched"] == 2

    def test_the_same_seed_and_operations_fire_the_same_pattern(self) -> None:
        rule = {"id": "coin", "kind": "error", "probability": 0.5}
        first, second = FaultBook(seed=7), FaultBook(seed=7)
        first.add(rule)
        second.add(rule)

        pattern = fired_pattern(first, op(), 40)

        assert pattern == fired_pattern(second, op(), 40)
        assert 5 < sum(pattern) < 35

    def test_another_seed_fires_another_pattern(self) -> None:
        rule = {"id": "coin", "kind": "error", "probability": 0.5}
        seven, eight = FaultBook(seed=7), FaultBook(seed=8)
        seven.add(rule)
        eight.add(rule)

        assert fired_pattern(seven, op(), 40) != fired_pattern(eight, op(), 40)

    def test_each_rule_has_its_own_random_stream(self) -> None:
        """Adding a second rule does not change which requests the first one fires on."""
        alone, paired = FaultBook(seed=3), FaultBook(seed=3)
        alone.add({"id": "a", "kind": "error", "probability": 0.5})
        paired.add({"id": "a", "kind": "error", "probability": 0.5})
        paired.add({"id": "b", "kind": "latency", "probability": 0.5})

        solo = [bool(alone.fire(op())) for _ in range(30)]
        mixed = [any(r.id == "a" for r, _ in paired.fire(op())) for _ in range(30)]

        assert solo == mixed

    def test_probability_zero_never_fires_and_one_always_fires(self) -> None:
        book = FaultBook(seed=1)
        book.add({"id": "never", "kind": "error", "probability": 0.0})
        book.add({"id": "always", "kind": "latency", "probability": 1.0})

        for _ in range(20):
            assert [r.id for r, _ in book.fire(op())] == ["always"]

    def test_rules_fire_in_the_order_they_were_added(self) -> None:
        book = FaultBook(seed=0)
        book.add({"id": "z", "kind": "latency"})
        book.add({"id": "a", "kind": "error"})

        assert [r.id for r, _ in book.fire(op())] == ["z", "a"]

    def test_default_ids_are_numbered_and_duplicates_refused(self) -> None:
        book = FaultBook(seed=0)

        assert book.add({"kind": "error"}).id == "f1"
        assert book.add({"kind": "error"}).id == "f2"
        with pytest.raises(SimConfigError, match="already in use"):
            book.add({"id": "f1", "kind": "latency"})

    def test_remove_and_clear(self) -> None:
        book = FaultBook(seed=0)
        book.add({"id": "a", "kind": "error"})
        book.add({"id": "b", "kind": "error"})

        assert book.remove("a") is True
        assert book.remove("a") is False
        assert [r["id"] for r in book.snapshot()] == ["b"]
        book.clear()
        assert book.fire(op()) == []


class TestErrors:
    def test_the_default_error_is_a_transient_500_code_2(self) -> None:
        err = FaultRule(FaultKind.ERROR).error()

        assert (err.status, err.code, err.subcode, err.is_transient) == (500, 2, None, True)
        assert err.type == "OAuthException"

    @pytest.mark.parametrize(
        ("preset", "status", "code", "subcode"),
        [
            ("service_unavailable", 500, 2, None),
            ("unknown_error", 500, 1, None),
            ("app_limit", 403, 4, None),
            ("mutation_rate", 400, 613, 5044001),
            ("throttle_80004", 400, 80004, 2446079),
            ("throttle_17", 400, 17, 2446079),
            ("throttle_613", 400, 613, 1487742),
            ("permission", 403, 200, None),
            ("invalid_parameter", 400, 100, None),
        ],
    )
    def test_presets_are_graphs_documented_errors(
        self, preset: str, status: int, code: int, subcode: int | None
    ) -> None:
        rule = FaultRule(FaultKind.ERROR, preset=preset)

        err = rule.error()

        assert (err.status, err.code, err.subcode) == (status, code, subcode)
        assert rule.raw_error() is None

    def test_raw_presets_are_not_json(self) -> None:
        assert FaultRule(FaultKind.ERROR, preset="bad_gateway_html").raw_error() == (
            502,
            "text/html",
            "<html><body>Sorry, something went wrong.</body></html>",
        )
        assert FaultRule(FaultKind.ERROR, preset="empty_500").raw_error() == (
            500,
            "application/json",
            "",
        )
        assert FaultRule(FaultKind.ERROR).raw_error() is None

    def test_an_explicit_error_is_used_as_given(self) -> None:
        rule = FaultRule(
            FaultKind.ERROR,
            status=400,
            code=100,
            subcode=33,
            error_type="GraphMethodException",
            message="gone",
            is_transient=None,
        )

        err = rule.error()

        assert (err.status, err.code, err.subcode, err.type, err.message) == (
            400,
            100,
            33,
            "GraphMethodException",
            "gone",
        )
        assert "is_transient" not in err.envelope("t")["error"]


class TestLatency:
    def test_fixed_latency_is_exact(self) -> None:
        rule = FaultRule(FaultKind.LATENCY, latency_ms=200)

        assert rule.sample_latency(random.Random(0)) == pytest.approx(0.2)

    def test_uniform_latency_stays_within_its_bounds(self) -> None:
        rule = FaultRule(
            FaultKind.LATENCY, distribution=Distribution.UNIFORM, latency_ms=50, latency_max_ms=400
        )
        rng = random.Random(1)

        samples = [rule.sample_latency(rng) for _ in range(200)]

        assert all(0.05 <= s <= 0.4 for s in samples)
        assert max(samples) - min(samples) > 0.2

    @pytest.mark.parametrize("distribution", [Distribution.EXPONENTIAL, Distribution.LOGNORMAL])
    def test_latency_max_caps_long_tailed_distributions(self, distribution: Distribution) -> None:
        rule = FaultRule(
            FaultKind.LATENCY, distribution=distribution, latency_ms=100, latency_max_ms=150
        )
        rng = random.Random(2)

        samples = [rule.sample_latency(rng) for _ in range(500)]

        assert all(0.0 <= s <= 0.15 for s in samples)
        assert any(s < 0.1 for s in samples)

    def test_sampling_is_deterministic_for_a_seeded_stream(self) -> None:
        rule = FaultRule(FaultKind.LATENCY, distribution=Distribution.EXPONENTIAL, latency_ms=80)

        first = [rule.sample_latency(random.Random("7/r")) for _ in range(3)]

        assert first == [rule.sample_latency(random.Random("7/r")) for _ in range(3)]

    def test_exponential_with_zero_mean_is_zero(self) -> None:
        rule = FaultRule(FaultKind.LATENCY, distribution=Distribution.EXPONENTIAL, latency_ms=0)

        assert rule.sample_latency(random.Random(0)) == 0.0
