"""gateway.sim.query: `fields` selection, edge filtering, and cursor paging."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.sim.config import DEFAULT_ACCOUNTS, DEFAULT_TOKENS, ObjectLimits
from gateway.sim.errors import GraphError
from gateway.sim.model import Kind, SimObject, World
from gateway.sim.query import (
    FieldSel,
    Filter,
    decode_cursor,
    encode_cursor,
    page,
    parse_fields,
    parse_filtering,
    parse_limit,
    render,
    select,
)

NOW = 1_800_000_000.0
ALICE = DEFAULT_TOKENS[0]


def world_with_campaigns(n: int, **limits: int) -> tuple[World, list[SimObject]]:
    """A default world with *n* paused campaigns in act_1001, oldest first."""
    world = World(DEFAULT_ACCOUNTS, DEFAULT_TOKENS, ObjectLimits(**limits), now=NOW)
    for i in range(n):
        world.create(
            ALICE,
            "act_1001",
            Kind.CAMPAIGN,
            {
                "name": f"c{i:02}",
                "objective": "OUTCOME_TRAFFIC",
                "special_ad_categories": "[]",
                "status": "PAUSED",
            },
            now=NOW + i,
        )
    return world, sorted(world.objects.values(), key=lambda o: o.seq)


def graph_error(call: Any, *args: Any) -> GraphError:
    with pytest.raises(GraphError) as caught:
        call(*args)
    return caught.value


class TestParseFields:
    def test_a_flat_list(self) -> None:
        assert parse_fields("id,name,status") == (
            FieldSel("id"),
            FieldSel("name"),
            FieldSel("status"),
        )

    def test_braces_select_subfields(self) -> None:
        assert parse_fields("name,campaign{id,name}") == (
            FieldSel("name"),
            FieldSel("campaign", (FieldSel("id"), FieldSel("name"))),
        )

    def test_nested_braces(self) -> None:
        assert parse_fields("ad{adset{campaign{name}},creative{id}},id") == (
            FieldSel(
                "ad",
                (
                    FieldSel("adset", (FieldSel("campaign", (FieldSel("name"),)),)),
                    FieldSel("creative", (FieldSel("id"),)),
                ),
            ),
            FieldSel("id"),
        )

    def test_modifiers_are_dropped_from_the_name(self) -> None:
        assert parse_fields("ads.limit(5){id},insights.date_preset(last_7d)") == (
            FieldSel("ads", (FieldSel("id"),)),
            FieldSel("insights"),
        )

    def test_blanks_and_empty_items_are_ignored(self) -> None:
        assert parse_fields(" name , ,status,, ") == (FieldSel("name"), FieldSel("status"))
        assert parse_fields("") == ()


class TestParseFiltering:
    def test_a_json_string_and_a_native_list_parse_the_same(self) -> None:
        native = [{"field": "name", "operator": "EQUAL", "value": "x"}]

        assert parse_filtering(native) == (Filter("name", "EQUAL", "x"),)
        assert parse_filtering('[{"field":"name","operator":"EQUAL","value":"x"}]') == (
            Filter("name", "EQUAL", "x"),
        )

    def test_field_aliases_map_to_attributes_and_operators_are_uppercased(self) -> None:
        filters = parse_filtering(
            [
                {"field": "campaign.id", "operator": "in", "value": ["1", "2"]},
                {"field": "configured_status", "operator": "not_equal", "value": "PAUSED"},
            ]
        )

        assert filters == (
            Filter("campaign_id", "IN", ["1", "2"]),
            Filter("status", "NOT_EQUAL", "PAUSED"),
        )

    @pytest.mark.parametrize(
        "raw",
        [
            '{"field":"name"}',
            [{"field": "name"}],
            ["name"],
            [{"field": "budget", "operator": "EQUAL", "value": 1}],
            [{"field": "name", "operator": "LIKE", "value": "x"}],
            [{"field": "id", "operator": "IN", "value": "1"}],
        ],
    )
    def test_invalid_filtering_is_a_code_100_blaming_filtering(self, raw: Any) -> None:
        err = graph_error(parse_filtering, raw)

        assert (err.status, err.code) == (400, 100)
        assert err.error_data == {"blame_field_specs": [["filtering"]]}

    @pytest.mark.parametrize("raw", [["ACTIVE", "paused"], '["ACTIVE","paused"]', "ACTIVE,paused"])
    def test_effective_status_accepts_a_list_json_or_commas(self, raw: Any) -> None:
        assert parse_filtering(None, raw) == (
            Filter("effective_status", "IN", ["ACTIVE", "PAUSED"]),
        )

    def test_effective_status_must_be_a_list(self) -> None:
        err = graph_error(parse_filtering, None, '{"a":1}')

        assert err.error_data == {"blame_field_specs": [["effective_status"]]}

    def test_nothing_given_is_no_filter(self) -> None:
        assert parse_filtering(None) == ()
        assert parse_filtering("", "") == ()


class TestSelect:
    def test_deleted_and_archived_objects_are_hidden_without_a_status_filter(self) -> None:
        world, (a, b, c) = world_with_campaigns(3)
        b.status, c.status = "DELETED", "ARCHIVED"

        assert select(world, [a, b, c], ()) == [a]
        archived = parse_filtering(None, '["ARCHIVED"]')
        assert select(world, [a, b, c], archived) == [c]

    @pytest.mark.parametrize(
        ("operator", "value", "expected"),
        [
            ("EQUAL", "c01", ["c01"]),
            ("NOT_EQUAL", "c01", ["c00", "c02"]),
            ("CONTAIN", "C0", ["c00", "c01", "c02"]),
            ("NOT_CONTAIN", "1", ["c00", "c02"]),
            ("STARTS_WITH", "C0", ["c00", "c01", "c02"]),
            ("IN", ["c00", "c02"], ["c00", "c02"]),
            ("NOT_IN", ["c00", "c02"], ["c01"]),
        ],
    )
    def test_text_operators_on_name(self, operator: str, value: Any, expected: list[str]) -> None:
        world, objects = world_with_campaigns(3)
        filters = parse_filtering([{"field": "name", "operator": operator, "value": value}])

        assert [o.name for o in select(world, objects, filters)] == expected

    def test_numeric_operators_compare_numbers_and_skip_non_numbers(self) -> None:
        world, objects = world_with_campaigns(3)
        middle = objects[1].created_time
        after = parse_filtering(
            [{"field": "created_time", "operator": "GREATER_THAN", "value": middle}]
        )
        by_name = parse_filtering([{"field": "name", "operator": "LESS_THAN", "value": 5}])

        assert [o.name for o in select(world, objects, after)] == ["c02"]
        assert select(world, objects, by_name) == []


class TestCursors:
    @pytest.mark.parametrize("seq", [0, 1, 7, 25, 10**6, 2**40])
    def test_a_cursor_decodes_to_the_position_it_encodes(self, seq: int) -> None:
        cursor = encode_cursor(seq)

        assert "=" not in cursor
        assert decode_cursor(cursor, "after") == seq

    @pytest.mark.parametrize("cursor", ["garbage!", "", "Zm9vOjE", "c2VxOng", "%%%"])
    def test_an_invalid_cursor_is_a_code_100_blaming_the_parameter(self, cursor: str) -> None:
        err = graph_error(decode_cursor, cursor, "before")

        assert (err.status, err.code) == (400, 100)
        assert "before" in err.message
        assert err.error_data == {"blame_field_specs": [["before"]]}


class TestParseLimit:
    def test_absent_means_the_default_and_large_is_clamped(self) -> None:
        assert parse_limit(None, 25, 100) == 25
        assert parse_limit("", 25, 100) == 25
        assert parse_limit("10", 25, 100) == 10
        assert parse_limit(10, 25, 100) == 10
        assert parse_limit("1000", 25, 100) == 100

    @pytest.mark.parametrize("raw", ["-1", "ten", "1.5"])
    def test_a_bad_limit_is_a_code_100(self, raw: str) -> None:
        assert graph_error(parse_limit, raw, 25, 100).code == 100


class TestPage:
    URL = "http://sim/v25.0/act_1001/campaigns"

    def _page(self, world: World, items: list[SimObject], **params: Any) -> dict[str, Any]:
        body: dict[str, Any] = page(world, items, params, selection=None, page_url=self.URL)
        return body

    def test_pages_follow_after_cursors_to_the_last_page(self) -> None:
        world, objects = world_with_campaigns(27)
        newest_first = list(reversed(objects))

        seen: list[str] = []
        params: dict[str, Any] = {"limit": "10"}
        pages = 0
        while True:
            body = self._page(world, newest_first, **params)
            pages += 1
            seen.extend(item["id"] for item in body["data"])
            if "next" not in body["paging"]:
                break
            query = parse_qs(urlsplit(body["paging"]["next"]).query)
            assert query["limit"] == ["10"]
            params = {"limit": "10", "after": query["after"][0]}

        assert pages == 3
        assert seen == [o.id for o in newest_first]

    def test_a_middle_page_has_previous_and_before_goes_back(self) -> None:
        world, objects = world_with_campaigns(12)
        newest_first = list(reversed(objects))
        first = self._page(world, newest_first, limit="5")
        second = self._page(
            world, newest_first, limit="5", after=first["paging"]["cursors"]["after"]
        )

        assert "previous" not in first["paging"]
        assert "previous" in second["paging"]
        back = self._page(
            world, newest_first, limit="5", before=second["paging"]["cursors"]["before"]
        )
        assert [d["id"] for d in back["data"]] == [d["id"] for d in first["data"]]

    def test_an_after_cursor_survives_the_deletion_of_its_object(self) -> None:
        world, objects = world_with_campaigns(6)
        newest_first = list(reversed(objects))
        first = self._page(world, newest_first, limit="3")
        last_seen = world.objects[first["data"][-1]["id"]]
        last_seen.status = "DELETED"
        live = select(world, newest_first, ())

        rest = self._page(world, live, limit="3", after=first["paging"]["cursors"]["after"])

        assert [d["id"] for d in rest["data"]] == [o.id for o in newest_first[3:]]

    def test_an_empty_edge_has_no_paging_and_summary_counts_everything(self) -> None:
        world, objects = world_with_campaigns(4)

        assert self._page(world, []) == {"data": []}
        body = self._page(world, objects, limit="2", summary="true")
        assert body["summary"] == {"total_count": 4}

    def test_the_default_limit_comes_from_the_object_limits(self) -> None:
        world, objects = world_with_campaigns(7, page_default_limit=3)

        assert len(self._page(world, objects)["data"]) == 3


class TestRender:
    def test_an_unknown_field_is_a_code_100_naming_the_node_type(self) -> None:
        world, (campaign,) = world_with_campaigns(1)

        err = graph_error(render, world, campaign, (FieldSel("budget_colour"),))

        assert err.code == 100
        assert "budget_colour" in err.message
        assert "Campaign" in err.message

    def test_id_is_always_included(self) -> None:
        world, (campaign,) = world_with_campaigns(1)

        assert render(world, campaign, (FieldSel("name"),)) == {
            "name": "c00",
            "id": campaign.id,
        }

    def test_an_account_renders_its_fields_and_refuses_unknown_ones(self) -> None:
        world, _ = world_with_campaigns(0)
        account = world.accounts["2001"]

        assert render(world, account, (FieldSel("account_status"),)) == {
            "account_status": 2,
            "id": "act_2001",
        }
        assert graph_error(render, world, account, (FieldSel("colour"),)).code == 100
