"""gateway.core.batchplan: sending part of a batch and merging the answer back.

Batch shapes follow graph-api-notes Part A §4 and Part B §2: the Python SDK posts a form with
`batch=<JSON array string>`; the Node SDK posts JSON with `"batch": [ … ]` as a native array.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.batchplan import FORM, BatchBody, encode, merge, own_entry, parse_batch_body

JSON = "application/json"
OPS: list[dict[str, Any]] = [
    {"method": "POST", "relative_url": "act_1/adsets", "body": f"name=adset%20{i}"}
    for i in range(4)
]


def form_fields(body: bytes) -> dict[str, str]:
    parsed = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True)
    assert all(len(v) == 1 for v in parsed.values())
    return {k: v[0] for k, v in parsed.items()}


def graph_entry(graph_id: str) -> dict[str, Any]:
    return {"code": 200, "headers": [], "body": json.dumps({"id": graph_id})}


class TestParseBatchBody:
    def test_a_form_batch_string_is_parsed_and_remembered_as_a_string(self) -> None:
        params = {"batch": json.dumps(OPS), "include_headers": "false"}
        assert parse_batch_body(params) == BatchBody({"include_headers": "false"}, OPS, True)

    def test_a_json_batch_array_is_kept_as_an_array(self) -> None:
        parsed = parse_batch_body({"batch": OPS, "access_token": "T"})
        assert parsed == BatchBody({"access_token": "T"}, OPS, False)

    def test_the_parsed_ops_are_a_copy_of_the_callers_list(self) -> None:
        ops = list(OPS)
        parsed = parse_batch_body({"batch": ops})
        assert parsed is not None
        assert parsed.ops == ops
        assert parsed.ops is not ops

    def test_an_empty_batch_parses(self) -> None:
        assert parse_batch_body({"batch": "[]"}) == BatchBody({}, [], True)

    @pytest.mark.parametrize(
        "params",
        [
            {},
            {"batch": None},
            {"batch": "[{truncated"},
            {"batch": ""},
            {"batch": '{"method":"GET"}'},
            {"batch": "5"},
            {"batch": {"method": "GET"}},
            {"batch": 5},
        ],
    )
    def test_a_missing_or_unreadable_batch_or_one_that_is_not_a_list_is_none(
        self, params: dict[str, Any]
    ) -> None:
        assert parse_batch_body(params) is None


class TestEncode:
    def test_a_form_batch_keeps_only_the_chosen_ops_as_a_compact_json_string(self) -> None:
        body = parse_batch_body({"batch": json.dumps(OPS)})
        assert body is not None
        fields = form_fields(encode(body, [0, 2], FORM))
        assert fields == {"batch": json.dumps([OPS[0], OPS[2]], separators=(",", ":"))}

    def test_a_form_batch_keeps_the_other_params_and_encodes_non_strings_as_json(self) -> None:
        body = BatchBody({"include_headers": False, "access_token": "T", "n": 3}, OPS, True)
        fields = form_fields(encode(body, [1], FORM))
        assert fields["include_headers"] == "false"
        assert fields["access_token"] == "T"
        assert fields["n"] == "3"
        assert json.loads(fields["batch"]) == [OPS[1]]

    def test_ops_go_out_in_the_order_asked(self) -> None:
        body = BatchBody({}, OPS, False)
        sent = json.loads(encode(body, [3, 1], JSON))
        assert sent == {"batch": [OPS[3], OPS[1]]}

    def test_a_json_batch_array_stays_a_native_array(self) -> None:
        body = parse_batch_body({"batch": OPS, "include_headers": False})
        assert body is not None
        out = encode(body, [1, 3], JSON)
        assert json.loads(out) == {"include_headers": False, "batch": [OPS[1], OPS[3]]}
        assert b", " not in out
        assert b": " not in out

    def test_a_json_body_whose_batch_was_a_string_gets_a_string_back(self) -> None:
        body = parse_batch_body({"batch": json.dumps(OPS)})
        assert body is not None
        doc = json.loads(encode(body, [0], JSON))
        assert isinstance(doc["batch"], str)
        assert json.loads(doc["batch"]) == [OPS[0]]

    def test_keeping_no_op_sends_an_empty_batch(self) -> None:
        body = BatchBody({}, OPS, False)
        assert json.loads(encode(body, [], JSON)) == {"batch": []}
        assert form_fields(encode(body, [], FORM)) == {"batch": "[]"}

    def test_any_content_type_other_than_a_form_is_encoded_as_json(self) -> None:
        # A multipart batch would also come out as JSON (see the report on this file).
        body = BatchBody({"a": "b"}, OPS, False)
        assert json.loads(encode(body, [0], "multipart/form-data")) == {
            "a": "b",
            "batch": [OPS[0]],
        }

    @given(st.lists(st.integers(min_value=0, max_value=3), unique=True), st.booleans())
    def test_both_encodings_round_trip_through_parse(self, keep: list[int], as_form: bool) -> None:
        body = BatchBody({"include_headers": "false"}, OPS, True)
        out = encode(body, keep, FORM if as_form else JSON)
        params: dict[str, Any] = form_fields(out) if as_form else json.loads(out)
        assert parse_batch_body(params) == BatchBody(
            {"include_headers": "false"}, [OPS[i] for i in keep], True
        )


class TestMerge:
    def test_graphs_entries_go_back_to_their_ops_and_own_entries_fill_the_rest(self) -> None:
        own = {1: own_entry(400, {"error": {"code": "cap"}}, {}), 3: {"code": 200, "body": "x"}}
        answer = [graph_entry("a"), graph_entry("c")]
        merged = merge(4, [0, 2], answer, own)
        assert merged == [answer[0], own[1], answer[1], own[3]]

    def test_own_entries_are_copied_not_shared(self) -> None:
        own = {0: {"code": 200}}
        merged = merge(1, [], [], own)
        assert merged == [{"code": 200}]
        assert merged[0] is not own[0]

    def test_a_null_graph_entry_stays_null(self) -> None:
        assert merge(2, [0, 1], [None, graph_entry("b")], {}) == [None, graph_entry("b")]

    @pytest.mark.parametrize(
        "answer",
        [
            {"error": {"code": 190, "message": "expired"}},  # the batch refused whole
            None,
            [graph_entry("a")],  # one entry short
            [graph_entry("a"), graph_entry("b"), graph_entry("c")],  # one too many
        ],
    )
    def test_an_answer_that_is_not_one_entry_per_sent_op_leaves_every_sent_op_null(
        self, answer: Any
    ) -> None:
        own = {1: {"code": 403}}
        assert merge(3, [0, 2], answer, own) == [None, {"code": 403}, None]

    def test_nothing_sent_and_nothing_owned_is_all_null(self) -> None:
        assert merge(2, [], [], {}) == [None, None]

    def test_an_own_entry_wins_over_graphs_for_the_same_op(self) -> None:
        assert merge(1, [0], [graph_entry("a")], {0: {"code": 409}}) == [{"code": 409}]


class TestOwnEntry:
    def test_it_is_shaped_like_a_graph_batch_entry(self) -> None:
        entry = own_entry(
            403,
            {"error": {"message": "cap", "code": 4}},
            {"Content-Type": "application/json", "X-Gateway-Request-Id": "r1"},
        )
        assert entry == {
            "code": 403,
            "headers": [
                {"name": "Content-Type", "value": "application/json"},
                {"name": "X-Gateway-Request-Id", "value": "r1"},
            ],
            "body": '{"error":{"message":"cap","code":4}}',
        }

    def test_its_body_is_a_json_string_the_sdks_can_parse(self) -> None:
        entry = own_entry(200, {"id": "5"}, {})
        assert entry["headers"] == []
        assert isinstance(entry["body"], str)
        assert json.loads(entry["body"]) == {"id": "5"}
