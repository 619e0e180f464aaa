"""Every bundled policy file parses, and every [[examples]] entry holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.app import bundled_policy_dir, load_policy
from gateway.core.classify import Batch, Create, Invalid, Passthrough, RawRequest, classify
from gateway.core.policy import parse
from gateway.core.retry import ErrorClass, ErrorRules, RetryPolicy, classify_error
from gateway.errors import ConfigError

POLICY = load_policy(None)
EXAMPLES = [(name, ex) for name, items in POLICY.examples.items() for ex in items]


def test_the_bundled_policies_are_found_and_parse() -> None:
    """The default policy set is the bundled directory's files, all valid."""
    names = {p.name for p in Path(bundled_policy_dir()).glob("*.toml")}
    assert {"upstream.toml", "proxy.toml", "classification.toml"} <= names
    assert POLICY.upstream.per_try_timeout_seconds <= POLICY.upstream.deadline_seconds
    assert POLICY.classification.edges["adsets"] == "adset"


def _error_outcome(example: dict[str, Any]) -> str:
    """The class of a failed call described by status, code, subcode, is_transient, message
    (which must never matter) and transport."""
    keys = {"code": "code", "subcode": "error_subcode", "is_transient": "is_transient"}
    error = {graph: example[key] for key, graph in keys.items() if key in example}
    if "message" in example and "transport" not in example:
        error["message"] = example["message"]
    return classify_error(
        POLICY.errors,
        status=example.get("status"),
        error=error or None,
        transport=example.get("transport"),
    ).value


def _outcome(example: dict[str, Any]) -> str:
    if example["expect"] in tuple(ErrorClass):
        return _error_outcome(example)
    body = example.get("body", "").encode()
    if "body_batch_of" in example:
        ops = [{"method": "GET", "relative_url": "me"}] * example["body_batch_of"]
        body = json.dumps({"batch": ops}).encode()
    query = dict(p.split("=", 1) for p in example.get("query", "").split("&") if p)
    decision = classify(
        RawRequest(
            method=example["method"],
            path=example["path"],
            query=query,
            content_type=example.get("content_type", ""),
            authorization=None,
            body=body if body else None,
        ),
        POLICY.classification.rules(),
    )
    match decision:
        case Passthrough():
            return "passthrough"
        case Invalid():
            return "invalid"
        case Create(op=op):
            return f"create:{op.entity_type}"
        case Batch(creates=creates, size=size):
            return f"batch:{len(creates)}/{size}"
    raise AssertionError(decision)


@pytest.mark.parametrize(("file", "example"), EXAMPLES, ids=[e["name"] for _, e in EXAMPLES])
def test_policy_example_holds(file: str, example: dict[str, Any]) -> None:
    """The example's request (or failed call) is classified as the file says."""
    assert _outcome(example) == example["expect"], f"{file}: {example['name']}"


def test_the_shipped_retry_policy_is_the_built_in_default() -> None:
    """A PolicySet built without files retries and classifies as the shipped retry.toml does."""
    assert POLICY.retry == RetryPolicy()
    assert POLICY.errors.compiled == ErrorRules().compiled
    assert (POLICY.errors.default, POLICY.errors.default_server_error) == (
        ErrorRules().default,
        ErrorRules().default_server_error,
    )


def test_every_error_class_has_an_example() -> None:
    """retry.toml shows each class at least once."""
    expected = {e["expect"] for e in POLICY.examples["retry.toml"]}
    assert expected == set(ErrorClass)


def test_a_bad_policy_lists_every_problem() -> None:
    """Unknown table, wrong type, bad range, missing version and a duplicate table at once."""
    docs: dict[str, dict[str, Any]] = {
        "a.toml": {"version": 1, "upstream": {"per_try_timeout_seconds": "slow"}, "nope": {}},
        "b.toml": {"upstream": {"deadline_seconds": 1}},
        "c.toml": {"version": 1, "proxy": {"client_keepalive_seconds": 2, "backlog": 0}},
        "d.toml": {"version": 1, "classification": {"edges": {"x": "widget"}, "batch_max_ops": 80}},
        "e.toml": {
            "version": 1,
            "retry": {"attempts": 0},
            "errors": {"rules": [{"class": "retry", "codes": [4]}]},
        },
    }
    with pytest.raises(ConfigError) as info:
        parse(docs)
    text = "\n".join(info.value.problems)
    for needle in (
        "per_try_timeout_seconds",
        "unknown table [nope]",
        "b.toml: version = 1 is required",
        "already defined",
        "client_keepalive_seconds",
        "backlog",
        "edges.x",
        "batch_max_ops",
        "attempts: must be >= 1",
        "rules[0].class",
    ):
        assert needle in text, needle
