"""The simulator's Graph batch API (graph-api-notes Part A §4, Part B §2 and §4).

Every test talks real HTTP to a fresh simulator (`graph_sim`) and checks what it claims
against its ground truth (`graph_sim.objects()`, `graph_sim.requests()`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.testing import SimHandle
from tests.sim.support import (
    ACCOUNT,
    TARGETING,
    TOKEN,
    Graph,
    Reply,
    adset_params,
    campaign_params,
    create_op,
    error_of,
    new_adset,
    new_campaign,
    node_op_body,
    python_batch,
    python_op_body,
)


async def node_batch(
    graph: Graph, ops: list[dict[str, Any]], *, token: str | None = TOKEN
) -> Reply:
    """The Node SDK's batch: `POST /v24.0`, JSON body whose `batch` is an array."""
    return await graph("POST", "/v24.0", token=token, json_body={"batch": ops})


def adset_body_referencing(op_name: str, name: str) -> str:
    """A Python-SDK-encoded ad set body whose campaign_id is a raw `{result=...}` reference."""
    params = adset_params("", name)
    del params["campaign_id"]
    return python_op_body(params) + f"&campaign_id={{result={op_name}:$.id}}"


def campaign_body(name: str) -> str:
    return python_op_body(campaign_params(name))


def assert_header_list(headers: Any) -> dict[str, str]:
    """A batch entry's `headers`: a list of `{name, value}` string pairs; returned as a dict."""
    assert isinstance(headers, list)
    for header in headers:
        assert set(header) == {"name", "value"}
        assert isinstance(header["name"], str)
        assert isinstance(header["value"], str)
    return {h["name"]: h["value"] for h in headers}


def ok_body(entry: Any) -> Any:
    """The parsed body of a successful entry, after checking the entry's full shape."""
    assert isinstance(entry, dict)
    assert set(entry) == {"code", "headers", "body"}
    assert entry["code"] == 200, entry
    assert_header_list(entry["headers"])
    assert isinstance(entry["body"], str)
    return json.loads(entry["body"])


def created_id(entry: Any) -> str:
    body = ok_body(entry)
    assert set(body) == {"id"}
    assert isinstance(body["id"], str)
    assert body["id"].isdigit()
    object_id: str = body["id"]
    return object_id


def error_entry(entry: Any, *, code: int) -> dict[str, Any]:
    """The error of a failed entry: `{code, headers, body: "<error envelope as a string>"}`."""
    assert isinstance(entry, dict)
    assert set(entry) == {"code", "headers", "body"}
    assert entry["code"] == code, entry
    assert_header_list(entry["headers"])
    assert isinstance(entry["body"], str)
    return error_of(json.loads(entry["body"]))


class TestSdkEncodings:
    async def test_python_sdk_batch_creates_ad_sets_under_one_campaign(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """The Python SDK's form-encoded batch creates every ad set, answering in request order."""
        campaign_id = await new_campaign(graph, "py campaign")
        names = [f"example batch adset {i}" for i in range(4)]
        ops = [
            {
                "body": python_op_body(adset_params(campaign_id, name)),
                "method": "POST",
                "relative_url": f"{ACCOUNT}/adsets",
            }
            for name in names
        ]
        assert "%20" in ops[0]["body"]
        assert "targeting=%7B%22age_max%22" in ops[0]["body"]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        assert isinstance(reply.body, list)
        assert len(reply.body) == len(names)
        ids = [created_id(entry) for entry in reply.body]
        assert len(set(ids)) == len(ids)
        truth = {row["id"]: row for row in await graph_sim.objects(type="adset")}
        assert set(truth) == set(ids)
        for object_id, name in zip(ids, names, strict=True):
            assert truth[object_id]["name"] == name
            assert truth[object_id]["campaign_id"] == campaign_id
            assert truth[object_id]["account_id"] == ACCOUNT
            assert truth[object_id]["status"] == "PAUSED"
        read = await graph(
            "GET",
            f"/v26.0/{ids[0]}/",
            params={"fields": "name,campaign_id,daily_budget,targeting,status"},
        )
        assert read.status == 200
        assert read.body == {
            "id": ids[0],
            "name": names[0],
            "campaign_id": campaign_id,
            "daily_budget": "1000",
            "targeting": TARGETING,
            "status": "PAUSED",
        }
        traffic = await graph_sim.requests()
        assert traffic["operations"]["create:adset"] == len(names)
        assert traffic["committed"]["create:adset"] == len(names)
        assert traffic["operations"]["batch"] == 1

    async def test_node_sdk_batch_creates_ad_sets_under_one_campaign(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """The Node SDK's JSON batch (raw op bodies, `name`, `attachedFiles`, `fields=`) works."""
        campaign_id = await new_campaign(graph, "node campaign")
        names = [f"example batch adset {i}" for i in range(3)]
        ops = [
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/adsets",
                "body": node_op_body(adset_params(campaign_id, name)),
                "name": name,
                "attachedFiles": "",
            }
            for name in names
        ]
        assert ops[0]["body"].startswith("name=example batch adset 0&")
        assert ops[0]["body"].endswith("&fields=")
        assert 'targeting={"geo_locations":{"countries":["US","CA"]}' in ops[0]["body"]

        reply = await node_batch(graph, ops)

        assert reply.status == 200
        assert isinstance(reply.body, list)
        assert len(reply.body) == len(names)
        ids = [created_id(entry) for entry in reply.body]
        truth = {row["id"]: row for row in await graph_sim.objects(type="adset")}
        assert set(truth) == set(ids)
        for object_id, name in zip(ids, names, strict=True):
            assert truth[object_id]["name"] == name
            assert truth[object_id]["campaign_id"] == campaign_id
        read = await graph(
            "GET",
            f"/v24.0/{ids[2]}",
            params={"fields": "name,daily_budget,targeting"},
        )
        assert read.body == {
            "id": ids[2],
            "name": names[2],
            "daily_budget": "1000",
            "targeting": TARGETING,
        }
        traffic = await graph_sim.requests()
        assert traffic["operations"]["create:adset"] == len(names)
        assert traffic["operations"]["batch"] == 1


class TestEntries:
    async def test_entries_carry_headers_as_name_value_pairs(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """Each entry's headers are `{name, value}` pairs: content type, version, usage."""
        ops = [create_op("campaigns", campaign_params("c"))]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        (entry,) = reply.body
        created_id(entry)
        headers = assert_header_list(entry["headers"])
        assert headers["Content-Type"] == "text/javascript; charset=UTF-8"
        assert headers["facebook-api-version"].startswith("v")
        assert set(json.loads(headers["X-App-Usage"])) == {
            "call_count",
            "total_cputime",
            "total_time",
        }
        assert set(json.loads(headers["X-Business-Use-Case-Usage"])) == {"1001"}

    async def test_entry_bodies_are_compact_json_strings(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """Entry bodies are JSON text in Graph's compact form, success and error alike."""
        ops = [
            create_op("campaigns", campaign_params("c")),
            {"method": "POST", "relative_url": f"{ACCOUNT}/campaigns", "body": "name=no+objective"},
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        for entry in reply.body:
            text = entry["body"]
            assert text == json.dumps(json.loads(text), separators=(",", ":"))

    async def test_include_headers_false_drops_the_headers(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """With `include_headers=false` every entry is just `{code, body}`."""
        campaign_id = await new_campaign(graph, "c")
        ops = [
            {"method": "GET", "relative_url": f"{campaign_id}?fields=name"},
            {"method": "GET", "relative_url": "999999999?fields=name"},
        ]

        reply = await python_batch(graph, ops, extra={"include_headers": "false"})

        assert reply.status == 200
        ok, missing = reply.body
        assert set(ok) == {"code", "body"}
        assert ok["code"] == 200
        assert json.loads(ok["body"]) == {"id": campaign_id, "name": "c"}
        assert set(missing) == {"code", "body"}
        assert missing["code"] == 400
        err = error_of(json.loads(missing["body"]))
        assert (err["code"], err["error_subcode"]) == (100, 33)

    async def test_one_failing_op_gets_an_error_entry_and_the_rest_succeed(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """A bad op's entry holds the error envelope as a string; the batch is still HTTP 200."""
        campaign_id = await new_campaign(graph, "c")
        bad = adset_params(campaign_id, "bad")
        del bad["campaign_id"]
        ops = [
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/adsets",
                "body": python_op_body(adset_params(campaign_id, "first")),
            },
            {"method": "POST", "relative_url": f"{ACCOUNT}/adsets", "body": python_op_body(bad)},
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/adsets",
                "body": python_op_body(adset_params(campaign_id, "third")),
            },
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        first, failed, third = reply.body
        err = error_entry(failed, code=400)
        assert err["code"] == 100
        assert err["is_transient"] is False
        assert err["error_data"] == {"blame_field_specs": [["campaign_id"]]}
        ids = [created_id(first), created_id(third)]
        truth = await graph_sim.objects(type="adset")
        assert sorted(row["id"] for row in truth) == sorted(ids)
        assert sorted(row["name"] for row in truth) == ["first", "third"]
        traffic = await graph_sim.requests()
        assert traffic["operations"]["create:adset"] == 3
        assert traffic["committed"]["create:adset"] == 2

    async def test_get_and_delete_ops_run_in_order(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """GET and DELETE ops answer like their top-level requests, in request order."""
        campaign_id = await new_campaign(graph, "c")
        adset_id = await new_adset(graph, campaign_id, "doomed")
        ops = [
            {"method": "GET", "relative_url": f"{campaign_id}?fields=name,status"},
            {"method": "DELETE", "relative_url": adset_id},
            {"method": "GET", "relative_url": f"{adset_id}?fields=status"},
            {"method": "GET", "relative_url": f"{campaign_id}/adsets"},
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        read, deleted, reread, listing = (ok_body(entry) for entry in reply.body)
        assert read == {"id": campaign_id, "name": "c", "status": "PAUSED"}
        assert deleted == {"success": True}
        assert reread == {"id": adset_id, "status": "DELETED"}
        assert listing == {"data": []}
        (row,) = await graph_sim.objects(type="adset")
        assert row["id"] == adset_id
        assert row["status"] == "DELETED"
        traffic = await graph_sim.requests()
        assert traffic["operations"]["delete:adset"] == 1
        assert traffic["operations"]["read:campaign"] == 1
        assert traffic["operations"]["read:adset"] == 1
        assert traffic["operations"]["list:adset"] == 1


class TestRelativeUrl:
    async def test_relative_url_may_carry_a_version(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """`v24.0/<id>` is served at that version, as the entry's header says."""
        campaign_id = await new_campaign(graph, "versioned")
        ops = [
            {"method": "GET", "relative_url": f"v24.0/{campaign_id}?fields=name"},
            {"method": "GET", "relative_url": f"/v23.0/{campaign_id}?fields=status"},
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        first, second = reply.body
        assert ok_body(first) == {"id": campaign_id, "name": "versioned"}
        assert ok_body(second) == {"id": campaign_id, "status": "PAUSED"}
        assert assert_header_list(first["headers"])["facebook-api-version"] == "v24.0"
        assert assert_header_list(second["headers"])["facebook-api-version"] == "v23.0"

    async def test_relative_url_query_string_supplies_parameters(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """Parameters in relative_url's query count like body parameters, for GET and POST."""
        older = await new_campaign(graph, "older")
        newer = await new_campaign(graph, "newer")
        ops = [
            {"method": "GET", "relative_url": f"{ACCOUNT}/campaigns?fields=name&limit=1"},
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/campaigns?name=from%20query&objective=OUTCOME_TRAFFIC",
                "body": "special_ad_categories=%5B%5D&status=PAUSED",
            },
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        listing = ok_body(reply.body[0])
        assert listing["data"] == [{"id": newer, "name": "newer"}]
        assert set(listing["paging"]) == {"cursors", "next"}
        created = created_id(reply.body[1])
        truth = {row["id"]: row["name"] for row in await graph_sim.objects(type="campaign")}
        assert truth == {older: "older", newer: "newer", created: "from query"}


class TestDependencies:
    async def test_named_result_feeds_a_later_op(self, graph_sim: SimHandle, graph: Graph) -> None:
        """`{result=camp:$.id}` in a body and a relative_url is the id the named op created."""
        ops = [
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/campaigns",
                "name": "camp",
                "body": campaign_body("parent"),
            },
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/adsets",
                "body": node_op_body(adset_params("{result=camp:$.id}", "child")),
            },
            {"method": "GET", "relative_url": "{result=camp:$.id}?fields=name"},
        ]

        reply = await node_batch(graph, ops)

        assert reply.status == 200
        campaign_id = created_id(reply.body[0])
        adset_id = created_id(reply.body[1])
        assert ok_body(reply.body[2]) == {"id": campaign_id, "name": "parent"}
        (adset,) = await graph_sim.objects(type="adset")
        assert adset["id"] == adset_id
        assert adset["campaign_id"] == campaign_id
        assert adset["name"] == "child"

    async def test_wildcard_result_joins_every_match_with_commas(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """`ids={result=list:$.data.*.id}` reads every object the named listing returned."""
        first = await new_campaign(graph, "first")
        second = await new_campaign(graph, "second")
        ops = [
            {"method": "GET", "name": "list", "relative_url": f"{ACCOUNT}/campaigns?fields=id"},
            {"method": "GET", "relative_url": "?ids={result=list:$.data.*.id}&fields=name"},
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        listing, multi = (ok_body(entry) for entry in reply.body)
        assert listing["data"] == [{"id": second}, {"id": first}]
        assert multi == {
            first: {"id": first, "name": "first"},
            second: {"id": second, "name": "second"},
        }

    async def test_depends_on_a_failed_op_gives_an_error_entry(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """An op depending on a failed op does not run; its entry is a Graph error."""
        ops = [
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/campaigns",
                "name": "camp",
                "body": "name=missing%20objective&special_ad_categories=%5B%5D",
            },
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/campaigns",
                "depends_on": "camp",
                "body": campaign_body("after the failure"),
            },
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/adsets",
                "body": adset_body_referencing("camp", "orphan"),
            },
            create_op("campaigns", campaign_params("independent")),
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        failed, dependent, referencing, independent = reply.body
        assert error_entry(failed, code=400)["code"] == 100
        assert error_entry(dependent, code=400)["code"] == 100
        assert error_entry(referencing, code=400)["code"] == 100
        created = created_id(independent)
        truth = await graph_sim.objects()
        assert [(row["id"], row["name"]) for row in truth] == [(created, "independent")]
        traffic = await graph_sim.requests()
        assert traffic["operations"]["create:campaign"] == 2
        assert "create:adset" not in traffic["operations"]

    async def test_omit_response_on_success_gives_a_null_entry(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """An op with `omit_response_on_success: true` answers `null`; its result still feeds."""
        ops = [
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/campaigns",
                "name": "camp",
                "omit_response_on_success": True,
                "body": campaign_body("omitted"),
            },
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/adsets",
                "depends_on": "camp",
                "body": adset_body_referencing("camp", "child"),
            },
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        omitted, child = reply.body
        assert omitted is None
        adset_id = created_id(child)
        (campaign,) = await graph_sim.objects(type="campaign")
        (adset,) = await graph_sim.objects(type="adset")
        assert campaign["name"] == "omitted"
        assert adset["id"] == adset_id
        assert adset["campaign_id"] == campaign["id"]

    async def test_omit_response_on_success_keeps_a_failed_entry(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """`omit_response_on_success` hides only successes: a failure is still reported."""
        ops = [
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/campaigns",
                "name": "camp",
                "omit_response_on_success": True,
                "body": "name=no%20objective",
            },
            {"method": "GET", "relative_url": "{result=camp:$.id}?fields=name"},
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        failed, dependent = reply.body
        assert error_entry(failed, code=400)["code"] == 100
        assert error_entry(dependent, code=400)["code"] == 100


class TestTokens:
    async def test_per_op_token_overrides_the_top_level_token(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """An op's own expired `access_token` fails only that op with 190; the others succeed."""
        ops = [
            create_op("campaigns", campaign_params("a")),
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/campaigns",
                "body": campaign_body("b") + "&access_token=sim-token-expired",
            },
            {"method": "GET", "relative_url": "me?access_token=sim-token-bob"},
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        ok, expired, bob = reply.body
        created = created_id(ok)
        err = error_entry(expired, code=400)
        assert (err["code"], err["error_subcode"], err["type"]) == (190, 463, "OAuthException")
        headers = assert_header_list(expired["headers"])
        assert headers["WWW-Authenticate"].startswith('OAuth "Facebook Platform" "invalid_token"')
        assert ok_body(bob) == {"id": "10002", "name": "Bob Sim"}
        truth = await graph_sim.objects()
        assert [(row["id"], row["name"]) for row in truth] == [(created, "a")]

    async def test_invalid_top_level_token_fails_the_whole_batch(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """A batch sent with an invalid token is one 190 error; no op runs."""
        ops = [
            create_op("campaigns", campaign_params("x")),
        ]

        reply = await python_batch(graph, ops, token="sim-token-invalid")

        assert reply.status == 400
        err = error_of(reply.body)
        assert (err["code"], err["error_subcode"], err["type"]) == (190, 467, "OAuthException")
        assert reply.headers["WWW-Authenticate"].startswith('OAuth "Facebook Platform"')
        assert await graph_sim.objects() == []
        traffic = await graph_sim.requests()
        assert traffic["operations"] == {"batch": 1}


class TestMalformedBatches:
    async def test_fifty_ops_are_accepted(self, graph_sim: SimHandle, graph: Graph) -> None:
        """Fifty ops, Graph's maximum, all run."""
        ops = [create_op("campaigns", campaign_params(f"c{i}")) for i in range(50)]

        reply = await python_batch(graph, ops)

        assert reply.status == 200
        ids = [created_id(entry) for entry in reply.body]
        truth = {row["id"]: row["name"] for row in await graph_sim.objects(type="campaign")}
        assert truth == {object_id: f"c{i}" for i, object_id in enumerate(ids)}

    async def test_more_than_fifty_ops_is_an_error_and_runs_nothing(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """Fifty-one ops answer HTTP 400 with a Graph error and create nothing."""
        ops = [create_op("campaigns", campaign_params(f"c{i}")) for i in range(51)]

        reply = await node_batch(graph, ops)

        assert reply.status == 400
        err = error_of(reply.body)
        assert err["code"] == 1
        assert "50" in err["message"]
        assert await graph_sim.objects() == []
        assert "create:campaign" not in (await graph_sim.requests())["operations"]

    @pytest.mark.parametrize(
        "raw",
        ["not json", '{"method": "GET", "relative_url": "me"}', "[]", '"a string"', ""],
        ids=["not-json", "object", "empty", "string", "blank"],
    )
    async def test_batch_that_is_not_a_non_empty_json_array_is_refused(
        self, graph_sim: SimHandle, graph: Graph, raw: str
    ) -> None:
        """A `batch` that is not a non-empty JSON array is a Graph-shaped HTTP 400."""
        reply = await graph("POST", "/v26.0/", data={"batch": raw})

        assert reply.status == 400
        err = error_of(reply.body)
        assert err["code"] == 100
        assert reply.headers["Content-Type"] == "application/json; charset=UTF-8"

    @pytest.mark.parametrize(
        "raw", [{}, [], "nope", 7], ids=["object", "empty", "string", "number"]
    )
    async def test_json_batch_that_is_not_a_non_empty_array_is_refused(
        self, graph_sim: SimHandle, graph: Graph, raw: Any
    ) -> None:
        """The Node form (`{"batch": ...}` JSON body) is validated the same way."""
        reply = await graph("POST", "/v24.0", json_body={"batch": raw})

        assert reply.status == 400
        assert error_of(reply.body)["code"] == 100

    async def test_op_without_relative_url_fails_the_batch(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """An op with no relative_url is a Graph-shaped HTTP 400 for the batch; nothing runs."""
        ops = [
            create_op("campaigns", campaign_params("a")),
            {"method": "POST", "body": campaign_body("b")},
        ]

        reply = await python_batch(graph, ops)

        assert reply.status == 400
        err = error_of(reply.body)
        assert err["code"] == 100
        assert "relative_url" in err["message"]
        assert await graph_sim.objects() == []

    async def test_op_that_is_not_an_object_fails_the_batch(
        self, graph_sim: SimHandle, graph: Graph
    ) -> None:
        """An op that is not a JSON object is a Graph-shaped HTTP 400 for the batch."""
        reply = await python_batch(graph, [{"method": "GET", "relative_url": "me"}, "me"])

        assert reply.status == 400
        assert error_of(reply.body)["code"] == 100
