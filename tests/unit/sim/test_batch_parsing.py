"""gateway.sim.batch: the `batch` parameter in both SDK encodings, ops, and JSONPath."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.sim.batch import (
    MissingResult,
    jsonpath,
    op_from,
    parse_batch,
    references,
    substitute,
)
from gateway.sim.errors import GraphError

OPS = [
    {"method": "POST", "relative_url": "act_1/campaigns", "body": "name=a"},
    {"method": "GET", "relative_url": "me"},
]


def batch_error(raw: Any, max_ops: int = 50) -> GraphError:
    with pytest.raises(GraphError) as caught:
        parse_batch(raw, max_ops=max_ops)
    return caught.value


class TestParseBatch:
    def test_a_json_string_and_an_array_give_the_same_ops(self) -> None:
        """Python SDK: form field holding a JSON string; Node SDK: a JSON array."""
        assert parse_batch(json.dumps(OPS), max_ops=50) == OPS
        assert parse_batch(OPS, max_ops=50) == OPS

    @pytest.mark.parametrize("raw", ["not json", "{}", '{"a": 1}', "[]", [], 3, None])
    def test_anything_but_a_non_empty_array_is_refused(self, raw: Any) -> None:
        err = batch_error(raw)

        assert (err.status, err.code) == (400, 100)
        assert err.type == "GraphBatchException"

    def test_more_ops_than_the_limit_is_code_1(self) -> None:
        err = batch_error([{"relative_url": "me"}] * 51)

        assert err.code == 1
        assert "50" in err.message
        assert parse_batch([{"relative_url": "me"}] * 50, max_ops=50)

    def test_an_op_must_be_an_object_with_a_relative_url(self) -> None:
        assert "Batch request 1" in batch_error([{"relative_url": "me"}, "GET me"]).message
        assert "relative_url" in batch_error([{"method": "GET"}]).message
        assert "relative_url" in batch_error([{"relative_url": 5}]).message


class TestOpFrom:
    def test_query_and_form_body_merge_with_the_body_winning(self) -> None:
        op = op_from(
            0,
            {
                "method": "post",
                "relative_url": "v25.0/act_1/adsets?fields=id&name=from-query",
                "body": "name=from%20body&targeting=%7B%22a%22%3A1%7D",
            },
            {},
        )

        assert op.method == "POST"
        assert op.path == "v25.0/act_1/adsets"
        assert op.params == {"fields": "id", "name": "from body", "targeting": '{"a":1}'}

    def test_defaults_for_a_bare_op(self) -> None:
        op = op_from(3, {"relative_url": "me"}, {})

        assert (op.index, op.method, op.path, op.params) == (3, "GET", "me", {})
        assert (op.name, op.depends_on, op.omit_response_on_success) == (None, None, False)
        assert op.attached_files == ()

    def test_name_dependencies_and_flags_are_read(self) -> None:
        op = op_from(
            0,
            {
                "relative_url": "me",
                "name": "first",
                "depends_on": "zero",
                "omit_response_on_success": "true",
                "attached_files": "file1, file2,",
            },
            {},
        )

        assert (op.name, op.depends_on, op.omit_response_on_success) == ("first", "zero", True)
        assert op.attached_files == ("file1", "file2")

    def test_a_node_body_that_is_not_url_encoded_still_parses(self) -> None:
        """Node's `k=${v}` bodies: spaces and JSON arrive raw (graph-api-notes Part B §2)."""
        body = (
            'name=example batch adset 0&daily_budget=1000&targeting={"geo_locations":'
            '{"countries":["US","CA"]},"age_min":18}&fields='
        )

        op = op_from(0, {"method": "POST", "relative_url": "act_1/adsets", "body": body}, {})

        assert op.params["name"] == "example batch adset 0"
        assert json.loads(op.params["targeting"]) == {
            "geo_locations": {"countries": ["US", "CA"]},
            "age_min": 18,
        }
        assert op.params["fields"] == ""

    def test_a_raw_plus_in_a_node_body_becomes_a_space(self) -> None:
        """As Graph would read it: the Node SDK's unencoded `+` is form-decoded."""
        op = op_from(0, {"relative_url": "x", "body": "name=100%+1"}, {})

        assert op.params["name"] == "100% 1"

    def test_a_body_sent_as_an_object_is_tolerated(self) -> None:
        op = op_from(
            0,
            {"relative_url": "act_1/ads", "body": {"name": "ad", "creative": {"creative_id": "7"}}},
            {},
        )

        assert op.params["name"] == "ad"
        assert json.loads(op.params["creative"]) == {"creative_id": "7"}

    def test_references_to_earlier_results_are_substituted(self) -> None:
        results = {"camp": {"id": "111"}, "imgs": {"images": {"a.png": {"hash": "h1"}}}}

        op = op_from(
            0,
            {
                "method": "POST",
                "relative_url": "act_1/adsets?x={result=camp:$.id}",
                "body": "campaign_id={result=camp:$.id}&image_hash={result=imgs:$.images.*.hash}",
            },
            results,
        )

        assert op.params == {"x": "111", "campaign_id": "111", "image_hash": "h1"}

    def test_a_reference_to_an_unknown_name_raises_missing_result(self) -> None:
        with pytest.raises(MissingResult) as caught:
            op_from(0, {"relative_url": "{result=ghost:$.id}"}, {})

        assert caught.value.name == "ghost"


def test_references_names_every_op_referred_to() -> None:
    item = {
        "relative_url": "?ids={result=a:$.data.*.id}",
        "body": "x={result=b:$.id}&y={result=a:$.id}",
    }

    assert references(item) == {"a", "b"}
    assert references({"relative_url": "me"}) == set()


def test_substitute_joins_many_values_with_commas() -> None:
    results = {"friends": {"data": [{"id": "1"}, {"id": "2"}, {"id": "3"}]}}

    assert substitute("ids={result=friends:$.data.*.id}", results) == "ids=1,2,3"


class TestJsonpath:
    DOC: dict[str, Any] = {  # noqa: RUF012  # read-only test data
        "id": "9",
        "data": [{"id": "1", "name": "a"}, {"id": "2"}, {"name": "no id"}],
        "images": {"x.png": {"hash": "hx"}, "y.png": {"hash": "hy"}},
    }

    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            ("$.id", ["9"]),
            ("$.data.*.id", ["1", "2"]),
            ("$.data[*].id", ["1", "2"]),
            ("$.images.*.hash", ["hx", "hy"]),
            ("$.data[0].id", ["1"]),
            ("$.data[1]", [{"id": "2"}]),
            ("$.data[9].id", []),
            ("$.missing", []),
            ("$.id.deeper", []),
        ],
    )
    def test_the_documented_subset(self, path: str, expected: list[Any]) -> None:
        assert jsonpath(self.DOC, path) == expected

    def test_the_root_is_the_whole_document(self) -> None:
        assert jsonpath(self.DOC, "$") == [self.DOC]

    def test_a_top_level_index_on_a_list(self) -> None:
        assert jsonpath([{"id": "a"}, {"id": "b"}], "[1].id") == ["b"]
        assert jsonpath([{"id": "a"}, {"id": "b"}], "$[0].id") == ["a"]
