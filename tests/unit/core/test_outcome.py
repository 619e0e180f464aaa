"""gateway.core.outcome: what Graph's answer says became of each create.

Answers follow graph-api-notes Part A: the error envelope (§1.1), the ambiguous cases that
must not be read as "nothing was created" (§2.7: 5xx, codes 1 and 2, HTML error pages, `null`
batch entries), the batch answer shape (§4) and the create/copy/adimages return shapes (§5).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.core.classify import CreateOp
from gateway.core.outcome import (
    AMBIGUOUS_CODES,
    Child,
    Created,
    Failed,
    Unknown,
    judge,
    judge_batch,
    parse_json,
)

ACCOUNT = "act_1234567890"
CAMPAIGN_ID = "120210000000000001"
ADSET_ID = "120210000000000002"
AD_ID = "120210000000000004"

CAMPAIGN = CreateOp(index=0, account_id=ACCOUNT, entity_type="campaign", parent_id=None, name="c")
ADSET = CreateOp(index=0, account_id=ACCOUNT, entity_type="adset", parent_id=CAMPAIGN_ID, name="s")
COPY = CreateOp(index=0, account_id=None, entity_type="copy", parent_id=CAMPAIGN_ID, name=None)
ADIMAGE = CreateOp(index=0, account_id=ACCOUNT, entity_type="adimage", parent_id=None, name=None)


def graph_error(
    code: int, subcode: int | None = None, message: str = "boom", **extra: Any
) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error.update(extra)
    return {"error": error}


def op_at(index: int, entity_type: str = "adset") -> CreateOp:
    return CreateOp(
        index=index, account_id=ACCOUNT, entity_type=entity_type, parent_id=None, name=None
    )


def entry(code: Any, body: Any) -> dict[str, Any]:
    """A batch answer entry: `body` is a JSON string, as Graph sends it."""
    text = body if body is None or isinstance(body, str) else json.dumps(body)
    return {"code": code, "headers": [], "body": text}


class TestParseJson:
    @pytest.mark.parametrize("body", [None, b"", ""])
    def test_an_empty_body_has_no_document(self, body: bytes | str | None) -> None:
        assert parse_json(body) is None

    @pytest.mark.parametrize("body", [b'{"id":"1"}', '{"id":"1"}'])
    def test_json_bytes_and_text_are_decoded(self, body: bytes | str) -> None:
        assert parse_json(body) == {"id": "1"}

    @pytest.mark.parametrize(
        "body",
        [
            b"<html><body>Sorry, something went wrong.</body></html>",
            b"\xff\xfe\xfa not utf",
            "{truncated",
        ],
    )
    def test_html_invalid_utf8_and_truncated_json_have_no_document(self, body: bytes | str) -> None:
        assert parse_json(body) is None


class TestJudgeErrors:
    @pytest.mark.parametrize("code", sorted(AMBIGUOUS_CODES))
    def test_codes_1_and_2_are_unknown_because_the_write_may_have_happened(self, code: int) -> None:
        outcome = judge(CAMPAIGN, 400, graph_error(code, is_transient=True))
        assert isinstance(outcome, Unknown)
        assert f"Graph error {code} (HTTP 400)" in outcome.reason

    def test_a_graph_error_with_a_5xx_status_is_unknown_whatever_its_code(self) -> None:
        outcome = judge(CAMPAIGN, 500, graph_error(100))
        assert outcome == Unknown("Graph error 100 (HTTP 500) may follow a write")

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_a_5xx_without_a_graph_error_body_is_unknown(self, status: int) -> None:
        html = parse_json(b"<html>Sorry, something went wrong.</html>")
        assert judge(CAMPAIGN, status, html) == Unknown(f"HTTP {status} without a Graph error body")

    def test_an_empty_5xx_is_unknown(self) -> None:
        assert isinstance(judge(CAMPAIGN, 500, parse_json(b"")), Unknown)

    @pytest.mark.parametrize(
        ("status", "code", "subcode"),
        [(400, 100, 1487694), (400, 190, 463), (403, 200, None), (400, 17, 2446079)],
    )
    def test_any_other_graph_error_means_nothing_was_created(
        self, status: int, code: int, subcode: int | None
    ) -> None:
        outcome = judge(ADSET, status, graph_error(code, subcode, message="nope"))
        assert outcome == Failed(
            {
                "status": status,
                "code": code,
                "subcode": subcode,
                "type": "OAuthException",
                "message": "nope",
            }
        )

    def test_a_failed_error_message_is_cut_to_500_characters(self) -> None:
        outcome = judge(ADSET, 400, graph_error(100, message="x" * 2000))
        assert isinstance(outcome, Failed)
        assert outcome.error["message"] == "x" * 500

    def test_an_error_without_a_message_records_an_empty_one(self) -> None:
        outcome = judge(ADSET, 400, {"error": {"code": 100}})
        assert isinstance(outcome, Failed)
        assert outcome.error["message"] == ""
        assert outcome.error["type"] is None

    def test_an_error_member_that_is_not_an_object_is_not_a_graph_error(self) -> None:
        outcome = judge(ADSET, 400, {"error": "bad"})
        assert outcome == Failed({"status": 400, "code": None, "message": "not a Graph answer"})

    @pytest.mark.parametrize("status", [301, 304, 400, 404])
    def test_a_non_2xx_below_500_without_an_error_body_failed(self, status: int) -> None:
        outcome = judge(ADSET, status, None)
        assert outcome == Failed({"status": status, "code": None, "message": "not a Graph answer"})

    @pytest.mark.parametrize("doc", [None, True, [1, 2], "id"])
    def test_a_2xx_whose_body_is_not_a_json_object_is_unknown(self, doc: Any) -> None:
        """A success whose body cannot be read may have created the entity: look, don't guess."""
        outcome = judge(ADSET, 200, doc)
        assert isinstance(outcome, Unknown)


class TestJudgeSingleCreate:
    def test_an_answer_with_a_string_id_created_that_entity(self) -> None:
        assert judge(CAMPAIGN, 200, {"id": CAMPAIGN_ID, "success": True}) == Created(CAMPAIGN_ID)

    def test_a_numeric_id_is_kept_as_a_string(self) -> None:
        assert judge(ADSET, 200, {"id": 120210000000000002}) == Created(ADSET_ID)

    @pytest.mark.parametrize(
        "doc",
        [
            {"success": True},  # execution_options=["validate_only"]
            {"id": ""},
            {"id": True},
            {"id": None},
            {"id": 1.5},
            {"id": ["1"]},
        ],
    )
    def test_a_success_without_a_usable_id_created_nothing(self, doc: dict[str, Any]) -> None:
        assert judge(CAMPAIGN, 200, doc) == Failed(
            {"status": 200, "code": None, "message": "answer names no entity id"}
        )


class TestJudgeImages:
    def test_one_uploaded_image_is_created_as_account_colon_hash(self) -> None:
        doc = {"images": {"photo.png": {"hash": "abc123", "url": "https://x"}}}
        assert judge(ADIMAGE, 200, doc) == Created("1234567890:abc123")

    def test_every_further_image_in_the_map_is_a_child(self) -> None:
        doc = {
            "images": {
                "a.png": {"hash": "h1"},
                "b.png": {"hash": "h2"},
                "c.png": {"hash": "h3"},
            }
        }
        assert judge(ADIMAGE, 200, doc) == Created(
            "1234567890:h1",
            children=(
                Child("adimage", "1234567890:h2", None),
                Child("adimage", "1234567890:h3", None),
            ),
        )

    def test_entries_without_a_hash_or_not_objects_are_skipped(self) -> None:
        doc = {"images": {"a": "junk", "b": {"hash": ""}, "c": {"url": "x"}, "d": {"hash": "h"}}}
        assert judge(ADIMAGE, 200, doc) == Created("1234567890:h")

    @pytest.mark.parametrize("images", [{}, {"a": {"url": "x"}}, {"a": None}])
    def test_an_images_map_without_any_hash_failed(self, images: dict[str, Any]) -> None:
        assert judge(ADIMAGE, 200, {"images": images}) == Failed(
            {"status": 200, "code": None, "message": "images answer without hashes"}
        )

    def test_an_adimage_answer_without_an_images_map_is_judged_by_its_id(self) -> None:
        assert judge(ADIMAGE, 200, {"id": "99"}) == Created("99")
        assert judge(ADIMAGE, 200, {"images": ["h"]}) == Failed(
            {"status": 200, "code": None, "message": "answer names no entity id"}
        )

    def test_an_op_without_an_account_names_images_by_hash_alone(self) -> None:
        op = CreateOp(index=0, account_id=None, entity_type="adimage", parent_id=None, name=None)
        assert judge(op, 200, {"images": {"a": {"hash": "h"}}}) == Created(":h")


class TestJudgeCopy:
    @pytest.mark.parametrize(
        ("key", "entity_type"),
        [
            ("copied_campaign_id", "campaign"),
            ("copied_adset_id", "adset"),
            ("copied_ad_id", "ad"),
        ],
    )
    def test_the_copied_id_names_the_new_top_entity_and_its_type(
        self, key: str, entity_type: str
    ) -> None:
        assert judge(COPY, 200, {key: "777"}) == Created("777", entity_type=entity_type)

    def test_a_numeric_copied_id_is_kept_as_a_string(self) -> None:
        assert judge(COPY, 200, {"copied_ad_id": 777}) == Created("777", entity_type="ad")

    def test_deep_copy_children_come_from_ad_object_ids_with_gateway_types(self) -> None:
        doc = {
            "copied_campaign_id": "900",
            "ad_object_ids": [
                {"ad_object_type": "campaign", "source_id": CAMPAIGN_ID, "copied_id": "900"},
                {"ad_object_type": "ad_set", "source_id": ADSET_ID, "copied_id": "901"},
                {"ad_object_type": "ad", "source_id": AD_ID, "copied_id": 902},
                {"ad_object_type": "unique_adcreative", "source_id": 5, "copied_id": "903"},
            ],
        }
        assert judge(COPY, 200, doc) == Created(
            "900",
            entity_type="campaign",
            children=(
                Child("adset", "901", ADSET_ID),
                Child("ad", "902", AD_ID),
                Child("adcreative", "903", "5"),
            ),
        )

    def test_an_unlisted_object_type_is_kept_verbatim(self) -> None:
        doc = {
            "copied_adset_id": "901",
            "ad_object_ids": [{"ad_object_type": "topline", "source_id": "1", "copied_id": "2"}],
        }
        outcome = judge(COPY, 200, doc)
        assert isinstance(outcome, Created)
        assert outcome.children == (Child("topline", "2", "1"),)

    def test_an_item_without_a_source_has_no_parent(self) -> None:
        doc = {
            "copied_adset_id": "901",
            "ad_object_ids": [{"ad_object_type": "ad", "source_id": "", "copied_id": "2"}],
        }
        outcome = judge(COPY, 200, doc)
        assert isinstance(outcome, Created)
        assert outcome.children == (Child("ad", "2", None),)

    @pytest.mark.parametrize(
        "items", [None, [], ["902", None, {"ad_object_type": "ad"}, {"copied_id": ""}]]
    )
    def test_missing_or_malformed_ad_object_ids_give_no_children(self, items: Any) -> None:
        outcome = judge(COPY, 200, {"copied_adset_id": "901", "ad_object_ids": items})
        assert outcome == Created("901", entity_type="adset")

    def test_the_first_copied_key_in_campaign_adset_ad_order_wins(self) -> None:
        doc = {"copied_ad_id": "3", "copied_campaign_id": "1", "copied_adset_id": "2"}
        assert judge(COPY, 200, doc) == Created("1", entity_type="campaign")

    @pytest.mark.parametrize(
        "doc", [{}, {"success": True}, {"id": "5"}, {"copied_campaign_id": ""}]
    )
    def test_a_copy_success_that_names_no_copied_id_is_unknown(self, doc: dict[str, Any]) -> None:
        assert judge(COPY, 200, doc) == Unknown("copy answer names no copied id")

    def test_a_copy_refused_by_graph_failed(self) -> None:
        assert isinstance(judge(COPY, 400, graph_error(100, 3858079)), Failed)


class TestJudgeBatch:
    def test_each_entry_is_judged_alone_by_its_own_code_and_body(self) -> None:
        ops = (op_at(0), op_at(1), op_at(2))
        doc = [
            entry(200, {"id": "11"}),
            entry(400, graph_error(100, message="bad")),
            entry(500, graph_error(1)),
        ]
        out = judge_batch(ops, 200, doc)
        assert out[0] == Created("11")
        assert isinstance(out[1], Failed)
        assert out[1].error["status"] == 400
        assert isinstance(out[2], Unknown)

    def test_a_null_entry_is_unknown(self) -> None:
        out = judge_batch((op_at(0), op_at(1)), 200, [entry(200, {"id": "1"}), None])
        assert out == {
            0: Created("1"),
            1: Unknown("null batch entry: the op may or may not have run"),
        }

    def test_an_op_past_the_end_of_the_answer_is_unknown(self) -> None:
        out = judge_batch((op_at(3),), 200, [entry(200, {"id": "1"})])
        assert out == {3: Unknown("null batch entry: the op may or may not have run")}

    def test_only_the_create_ops_are_judged_by_their_batch_index(self) -> None:
        doc = [entry(200, {"data": []}), entry(200, {"id": "22"})]
        assert judge_batch((op_at(1),), 200, doc) == {1: Created("22")}

    @pytest.mark.parametrize("code", [None, "200", 200.0])
    def test_an_entry_without_an_integer_code_is_read_as_a_5xx(self, code: Any) -> None:
        out = judge_batch((op_at(0),), 200, [entry(code, {"id": "1"})])
        assert out == {0: Unknown("HTTP 500 without a Graph error body")}

    def test_an_entry_whose_body_is_not_json_is_unknown(self) -> None:
        """A 200 entry with an unreadable body may have created the entity."""
        out = judge_batch((op_at(0),), 200, [entry(200, "<html>")])
        assert isinstance(out[0], Unknown)

    def test_a_copy_and_an_image_in_one_batch_use_their_own_answer_shapes(self) -> None:
        ops = (op_at(0, "copy"), op_at(1, "adimage"))
        doc = [
            entry(200, {"copied_ad_id": "5"}),
            entry(200, {"images": {"f": {"hash": "hh"}}}),
        ]
        assert judge_batch(ops, 200, doc) == {
            0: Created("5", entity_type="ad"),
            1: Created("1234567890:hh"),
        }

    def test_a_batch_refused_whole_with_a_graph_error_ran_none_of_its_ops(self) -> None:
        ops = (op_at(0), op_at(1))
        out = judge_batch(ops, 400, graph_error(190, 463, message="expired"))
        failed = Failed(
            {
                "status": 400,
                "code": 190,
                "subcode": 463,
                "type": "OAuthException",
                "message": "expired",
            }
        )
        assert out == {0: failed, 1: failed}

    @pytest.mark.parametrize(
        ("status", "doc"),
        [
            (500, None),  # empty 5xx
            (502, parse_json(b"<html>Sorry, something went wrong.</html>")),
            (500, graph_error(100)),  # a Graph error, but with a 5xx
            (400, graph_error(2, is_transient=True)),  # refused with an ambiguous code
            (400, None),  # a 4xx that is not a Graph answer
            (200, {"id": "1"}),  # a success that is not a list of entries
            (200, None),
        ],
    )
    def test_an_answer_that_is_not_a_list_and_not_a_clear_refusal_leaves_every_op_unknown(
        self, status: int, doc: Any
    ) -> None:
        out = judge_batch((op_at(0), op_at(4)), status, doc)
        assert out == {
            0: Unknown("batch answer is not a list of entries"),
            4: Unknown("batch answer is not a list of entries"),
        }

    def test_an_empty_batch_has_no_outcomes(self) -> None:
        assert judge_batch((), 200, []) == {}
        assert judge_batch((), 500, None) == {}
