"""GATEWAY_TEST_REQUIRE decides whether a missing service skips or fails its tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import required_services, when_unavailable


@pytest.mark.parametrize("value", [None, "", "  ", ",", " , "])
def test_unset_or_blank_requires_nothing(value: str | None) -> None:
    assert required_services(value) == frozenset()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("postgres", {"postgres"}),
        ("redis", {"redis"}),
        ("postgres,redis", {"postgres", "redis"}),
        (" Redis , POSTGRES ,", {"postgres", "redis"}),
        ("redis,redis", {"redis"}),
    ],
)
def test_names_are_comma_separated_trimmed_and_case_insensitive(
    value: str, expected: set[str]
) -> None:
    assert required_services(value) == expected


@pytest.mark.parametrize("value", ["postgress", "postgres,mysql", "redis;postgres"])
def test_an_unknown_name_is_an_error_not_a_silent_skip(value: str) -> None:
    with pytest.raises(ValueError, match="unknown service"):
        required_services(value)


def test_a_required_service_that_is_missing_fails() -> None:
    assert when_unavailable("postgres", frozenset({"postgres", "redis"})) == "fail"


def test_a_service_not_required_that_is_missing_skips() -> None:
    assert when_unavailable("redis", frozenset({"postgres"})) == "skip"
    assert when_unavailable("postgres", frozenset()) == "skip"


def test_ci_requires_both_services() -> None:
    """The GATEWAY_TEST_REQUIRE that .ci/run exports turns both services' skips into failures."""
    ci_run = (Path(__file__).parents[2] / ".ci" / "run").read_text(encoding="utf-8")
    exported = re.search(r'^export GATEWAY_TEST_REQUIRE="([^"]*)"$', ci_run, re.MULTILINE)
    assert exported is not None, ".ci/run no longer exports GATEWAY_TEST_REQUIRE"
    required = required_services(exported.group(1))
    assert when_unavailable("postgres", required) == "fail"
    assert when_unavailable("redis", required) == "fail"
