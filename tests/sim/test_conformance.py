"""The simulator answers like Graph (graph-api-notes Part A), over real HTTP.

Every test talks to a fresh simulator (`graph_sim`) through an aiohttp client of its own,
sending requests the way the official SDKs do (token in the query, form bodies with nested
params as JSON strings, or JSON bodies with native nesting), and checks the answer's full
shape. Ground truth comes from the control API (`graph_sim.objects()`).
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import aiohttp
import pytest

from tests.sim.support import (
    ACCOUNT,
    API,
    METHOD,
    TARGETING,
    TOKEN,
    UNPINNED,
    Graph,
    ad_params,
    assert_graph_error,
    create,
    new_ad,
    new_adset,
    new_campaign,
    new_creative,
    ok,
)

EXPIRED = "sim-token-expired"
INVALID = "sim-token-invalid"
READONLY = "sim-token-readonly"
ALICE_USER_ID = "10001"

DISABLED_ACCOUNT = "act_2001"
UNSETTLED_ACCOUNT = "act_3001"

GRAPH_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+0000$")


# --- checking answers --------------------------------------------------------------------------


def blame(err: Mapping[str, Any]) -> Any:
    """`error_data.blame_field_specs`; Graph sends `error_data` as an object or a JSON string."""
    data = err["error_data"]
    if isinstance(data, str):
        data = json.loads(data)
    return data["blame_field_specs"]


# --- building ad objects ---------------------------------------------------------------------


class Tree(NamedTuple):
    campaign: str
    adset: str
    creative: str
    ad: str


async def new_tree(graph: Graph, label: str = "T", *, status: str = "PAUSED") -> Tree:
    campaign = await new_campaign(graph, f"{label} campaign", status=status)
    adset = await new_adset(graph, campaign, f"{label} ad set", status=status)
    creative = await new_creative(graph, f"{label} creative")
    ad = await new_ad(graph, adset, creative, f"{label} ad", status=status)
    return Tree(campaign, adset, creative, ad)


def ids_of(body: Mapping[str, Any]) -> list[str]:
    return [item["id"] for item in body["data"]]


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG of the given size."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# --- tests -------------------------------------------------------------------------------------


class TestErrors:
    async def test_expired_token_gets_190_463_with_www_authenticate(self, graph):
        """An expired token is refused with 190/463, HTTP 400 and an OAuth WWW-Authenticate."""
        reply = await graph("GET", "/v25.0/me", token=EXPIRED)
        assert_graph_error(reply, status=400, code=190, subcode=463)
        assert reply.headers["WWW-Authenticate"].startswith(
            'OAuth "Facebook Platform" "invalid_token"'
        )

    async def test_invalid_token_gets_190_467_with_www_authenticate(self, graph):
        """A revoked token is refused with 190/467, HTTP 400 and an OAuth WWW-Authenticate."""
        reply = await graph("GET", f"/v25.0/{ACCOUNT}/campaigns", token=INVALID)
        assert_graph_error(reply, status=400, code=190, subcode=467)
        assert reply.headers["WWW-Authenticate"].startswith(
            'OAuth "Facebook Platform" "invalid_token"'
        )

    async def test_unknown_token_gets_190_without_subcode(self, graph):
        """A token Graph cannot parse is 190 with no subcode."""
        reply = await graph("GET", "/v25.0/me", token="not-a-token-anyone-issued")
        assert_graph_error(reply, status=400, code=190)
        assert "WWW-Authenticate" in reply.headers

    async def test_missing_token_gets_104(self, graph):
        """A request without any token is 104 "An access token is required"."""
        reply = await graph("GET", f"/v25.0/{ACCOUNT}/campaigns", token=None)
        assert_graph_error(reply, status=400, code=104)

    async def test_bad_token_is_reported_before_a_bad_path(self, graph):
        """Graph checks the token first: an expired token on an unknown id is still 190/463."""
        reply = await graph("GET", "/v25.0/999999999", token=EXPIRED)
        assert_graph_error(reply, status=400, code=190, subcode=463)

    async def test_unknown_id_get_is_100_33_graph_method_exception(self, graph):
        """Reading an id that does not exist is 100/33 GraphMethodException "Unsupported get"."""
        reply = await graph("GET", "/v25.0/120209999999999999")
        err = assert_graph_error(
            reply, status=400, code=100, subcode=33, type_=METHOD, is_transient=False
        )
        assert err["message"].startswith("Unsupported get request.")
        assert "120209999999999999" in err["message"]

    async def test_unknown_id_post_is_100_33_graph_method_exception(self, graph):
        """Updating an id that does not exist is 100/33 GraphMethodException "Unsupported post"."""
        reply = await graph("POST", "/v25.0/120209999999999999", data={"name": "x"})
        err = assert_graph_error(
            reply, status=400, code=100, subcode=33, type_=METHOD, is_transient=False
        )
        assert err["message"].startswith("Unsupported post request.")

    async def test_unknown_account_is_100_33(self, graph):
        """An ad account that does not exist reads like any missing object: 100/33."""
        reply = await graph("GET", "/v25.0/act_987654321")
        assert_graph_error(reply, status=400, code=100, subcode=33, type_=METHOD)

    @pytest.mark.parametrize(
        "tail", ["/campaigns/extra", "/campaigns/extra/more"], ids=["one", "two"]
    )
    async def test_unknown_path_components_get_2500(self, graph, tail):
        """Path segments beyond node/edge are 2500 "Unknown path components"."""
        reply = await graph("GET", f"/v25.0/{ACCOUNT}{tail}")
        err = assert_graph_error(reply, status=400, code=2500)
        assert err["message"].startswith("Unknown path components: /extra")

    async def test_nonexisting_edge_on_account_is_100(self, graph):
        """GET /act_1001/foo is 100 "Tried accessing nonexisting field (foo) on ... (AdAccount)"."""
        reply = await graph("GET", f"/v25.0/{ACCOUNT}/foo")
        err = assert_graph_error(reply, status=400, code=100)
        assert "nonexisting field (foo)" in err["message"]
        assert "(AdAccount)" in err["message"]

    async def test_nonexisting_field_in_fields_is_100(self, graph):
        """`fields=bogus` on a campaign names the field and the node type Campaign."""
        campaign = await new_campaign(graph)
        reply = await graph("GET", f"/v25.0/{campaign}", params={"fields": "name,bogus"})
        err = assert_graph_error(reply, status=400, code=100)
        assert "nonexisting field (bogus)" in err["message"]
        assert "(Campaign)" in err["message"]

    async def test_read_only_token_writing_gets_200_with_http_403(self, graph, graph_sim):
        """A token without ads_management that creates is refused with code 200, HTTP 403."""
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/campaigns",
            token=READONLY,
            data={"name": "x", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        )
        assert_graph_error(reply, status=403, code=200, is_transient=False)
        assert await graph_sim.objects(type="campaign") == []

    async def test_read_only_token_cannot_delete(self, graph, graph_sim):
        """A read-only token's DELETE is refused with code 200, HTTP 403, and nothing changes."""
        campaign = await new_campaign(graph)
        reply = await graph("DELETE", f"/v25.0/{campaign}", token=READONLY)
        assert_graph_error(reply, status=403, code=200, is_transient=False)
        [row] = await graph_sim.objects(type="campaign")
        assert row["status"] == "PAUSED"

    @pytest.mark.parametrize("account", [DISABLED_ACCOUNT, UNSETTLED_ACCOUNT])
    async def test_write_to_inactive_account_is_refused_with_403_code_200(
        self, graph, graph_sim, account
    ):
        """Creating in a disabled or unsettled account is 403 code 200; nothing is stored."""
        reply = await graph(
            "POST",
            f"/v25.0/{account}/campaigns",
            data={"name": "x", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        )
        assert_graph_error(reply, status=403, code=200, is_transient=False)
        assert await graph_sim.objects(account=account) == []

    @pytest.mark.parametrize(("account", "status"), [(DISABLED_ACCOUNT, 2), (UNSETTLED_ACCOUNT, 3)])
    async def test_reads_of_inactive_account_work(self, graph, account, status):
        """A disabled or unsettled account can still be read, node and edges."""
        node = ok(await graph("GET", f"/v25.0/{account}", params={"fields": "account_status"}))
        assert node == {"account_status": status, "id": account}
        edge = ok(await graph("GET", f"/v25.0/{account}/campaigns"))
        assert edge["data"] == []

    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "/v12.0/me"), ("POST", f"/v18.0/{ACCOUNT}/campaigns")],
    )
    async def test_deprecated_version_gets_2635(self, graph, graph_sim, method, path):
        """Calls on a version older than the oldest served one are 2635 and change nothing."""
        reply = await graph(
            method,
            path,
            data={"name": "x", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"}
            if method == "POST"
            else None,
        )
        err = assert_graph_error(reply, status=400, code=2635, is_transient=False)
        assert "deprecated version" in err["message"]
        assert await graph_sim.objects() == []

    async def test_missing_required_field_blames_it(self, graph, graph_sim):
        """A campaign without `objective` is 100 with blame_field_specs [["objective"]]."""
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/campaigns",
            data={"name": "x", "status": "PAUSED", "special_ad_categories": "[]"},
        )
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["objective"]]
        assert await graph_sim.objects() == []

    async def test_invalid_status_at_create_blames_status(self, graph):
        """Campaigns are created ACTIVE or PAUSED only; anything else blames `status`."""
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/campaigns",
            data={
                "name": "x",
                "objective": "OUTCOME_TRAFFIC",
                "special_ad_categories": "[]",
                "status": "DELETED",
            },
        )
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["status"]]


class TestTokens:
    @pytest.mark.parametrize(
        ("params", "headers"),
        [
            ({"access_token": TOKEN}, {}),
            ({}, {"Authorization": f"Bearer {TOKEN}"}),
            ({}, {"Authorization": f"OAuth {TOKEN}"}),
        ],
        ids=["query", "bearer", "oauth"],
    )
    async def test_token_is_accepted_from_query_and_authorization_header(
        self, graph, params, headers
    ):
        """`access_token` in the query, `Authorization: Bearer` and `...: OAuth` all work."""
        body = ok(await graph("GET", "/v25.0/me", token=None, params=params, headers=headers))
        assert body == {"id": ALICE_USER_ID, "name": "Alice Sim"}

    @pytest.mark.parametrize("placement", ["form", "json"])
    async def test_token_is_accepted_from_the_body(self, graph, graph_sim, placement):
        """`access_token` in a form body or a JSON body authenticates a create."""
        fields = {
            "access_token": TOKEN,
            "name": "body token",
            "objective": "OUTCOME_TRAFFIC",
            "special_ad_categories": "[]",
        }
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/campaigns",
            token=None,
            data=fields if placement == "form" else None,
            json_body=fields if placement == "json" else None,
        )
        created = ok(reply)["id"]
        [row] = await graph_sim.objects(type="campaign")
        assert row["id"] == created
        assert row["name"] == "body token"

    async def test_read_only_token_reads(self, graph):
        """A token with only ads_read can read accounts, edges and objects."""
        campaign = await new_campaign(graph, "readable")
        edge = ok(await graph("GET", f"/v25.0/{ACCOUNT}/campaigns", token=READONLY))
        assert ids_of(edge) == [campaign]
        node = ok(await graph("GET", f"/v25.0/{campaign}", token=READONLY))
        assert node == {"id": campaign, "name": "readable"}

    async def test_me_returns_the_token_user(self, graph):
        """GET /me is the cheap validity check: the token's user id and name."""
        assert ok(await graph("GET", "/me")) == {"id": ALICE_USER_ID, "name": "Alice Sim"}

    async def test_me_adaccounts_lists_every_account_the_token_may_use(self, graph):
        """GET /me/adaccounts lists the default accounts with the fields asked for."""
        body = ok(
            await graph("GET", "/v25.0/me/adaccounts", params={"fields": "name,account_status"})
        )
        by_id = {item["id"]: item for item in body["data"]}
        assert set(by_id) == {"act_1001", "act_1002", DISABLED_ACCOUNT, UNSETTLED_ACCOUNT}
        assert by_id[ACCOUNT]["account_status"] == 1
        assert by_id[DISABLED_ACCOUNT]["account_status"] == 2
        assert by_id[UNSETTLED_ACCOUNT]["account_status"] == 3
        assert by_id[ACCOUNT]["name"] == "Sim Active Account"

    async def test_token_limited_to_some_accounts_sees_only_those(self, graph, graph_sim):
        """A token granted act_1002 only lists act_1002; other accounts look missing (100/33)."""
        await graph_sim.put_token(token="sim-token-carol", accounts=["act_1002"])
        body = ok(await graph("GET", "/v25.0/me/adaccounts", token="sim-token-carol"))
        assert ids_of(body) == ["act_1002"]
        reply = await graph("GET", f"/v25.0/{ACCOUNT}/campaigns", token="sim-token-carol")
        assert_graph_error(reply, status=400, code=100, subcode=33, type_=METHOD)

    async def test_debug_token_describes_a_valid_token(self, graph):
        """/debug_token?input_token= for a valid token: is_valid, user, app and scopes."""
        body = ok(await graph("GET", "/v25.0/debug_token", params={"input_token": TOKEN}))
        data = body["data"]
        assert data["is_valid"] is True
        assert data["user_id"] == ALICE_USER_ID
        assert data["type"] == "USER"
        assert isinstance(data["app_id"], str)
        assert data["app_id"]
        assert "ads_management" in data["scopes"]
        assert "error" not in data

    async def test_debug_token_reports_an_expired_token_as_invalid(self, graph):
        """/debug_token on an expired token: is_valid false with error 190/463, expiry past."""
        body = ok(await graph("GET", "/v25.0/debug_token", params={"input_token": EXPIRED}))
        data = body["data"]
        assert data["is_valid"] is False
        assert data["error"]["code"] == 190
        assert data["error"]["subcode"] == 463
        assert 0 < data["expires_at"] < data["data_access_expires_at"]

    async def test_debug_token_reports_an_unknown_token_as_invalid(self, graph):
        """/debug_token on a token nobody issued: is_valid false with a 190 error."""
        body = ok(await graph("GET", "/v25.0/debug_token", params={"input_token": "nonsense"}))
        data = body["data"]
        assert data["is_valid"] is False
        assert data["error"]["code"] == 190

    async def test_debug_token_reports_read_only_scopes(self, graph):
        """/debug_token shows that the read-only token lacks ads_management."""
        body = ok(await graph("GET", "/v25.0/debug_token", params={"input_token": READONLY}))
        assert body["data"]["is_valid"] is True
        assert body["data"]["scopes"] == ["ads_read"]


class TestPaths:
    async def test_versioned_and_unversioned_paths_reach_the_same_object(self, graph):
        """/v25.0/{id}, /v26.0/{id} and /{id} read the same node."""
        campaign = await new_campaign(graph, "same")
        expected = {"id": campaign, "name": "same"}
        for path in (f"/v25.0/{campaign}", f"/v26.0/{campaign}", f"/{campaign}"):
            assert ok(await graph("GET", path)) == expected, path

    async def test_trailing_slash_is_accepted_as_the_python_sdk_sends_it(self, graph, graph_sim):
        """GET and DELETE on `/v26.0/{id}/` (the Python SDK's form) work."""
        campaign = await new_campaign(graph, "slash")
        body = ok(await graph("GET", f"/v26.0/{campaign}/", params={"fields": "name,status"}))
        assert body == {"id": campaign, "name": "slash", "status": "PAUSED"}
        assert ok(await graph("DELETE", f"/v26.0/{campaign}/")) == {"success": True}
        [row] = await graph_sim.objects(type="campaign")
        assert row["status"] == "DELETED"

    async def test_edge_with_trailing_slash_works(self, graph):
        """`/v26.0/act_1001/campaigns/` lists the edge like the path without a slash."""
        campaign = await new_campaign(graph)
        assert ids_of(ok(await graph("GET", f"/v26.0/{ACCOUNT}/campaigns/"))) == [campaign]

    @pytest.mark.parametrize(
        ("prefix", "version"),
        [("/v25.0", "v25.0"), ("/v26.0", "v26.0"), ("/v19.0", "v19.0"), ("", "v25.0")],
        ids=["v25", "v26", "oldest", "unversioned"],
    )
    async def test_api_version_header_echoes_the_requested_version(self, graph, prefix, version):
        """`facebook-api-version` is the version in the path, or v25.0 when there is none."""
        reply = await graph("GET", f"{prefix}/me")
        assert reply.status == 200
        assert reply.headers["facebook-api-version"] == version

    async def test_api_version_header_is_sent_on_errors(self, graph):
        """Error answers carry `facebook-api-version` too."""
        reply = await graph("GET", "/v26.0/120209999999999999")
        assert_graph_error(reply, status=400, code=100, subcode=33, type_=METHOD)
        assert reply.headers["facebook-api-version"] == "v26.0"

    async def test_graph_headers_are_sent(self, graph):
        """Answers carry Graph's cache headers, JSON content type and trace/request ids."""
        reply = await graph("GET", "/v25.0/me")
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/json; charset=UTF-8"
        assert reply.headers["Cache-Control"] == "private, no-cache, no-store, must-revalidate"
        assert reply.headers["Expires"] == "Sat, 01 Jan 2000 00:00:00 GMT"
        assert reply.headers["Pragma"] == "no-cache"
        assert reply.headers["x-fb-trace-id"]
        assert reply.headers["x-fb-request-id"]

    async def test_node_style_get_with_empty_json_body_works(self, graph):
        """The Node SDK sends `{}` with Content-Type application/json on GET; Graph ignores it."""
        campaign = await new_campaign(graph, "node")
        body = ok(await graph("GET", f"/v24.0/{campaign}", params={"fields": "name"}, json_body={}))
        assert body == {"id": campaign, "name": "node"}

    async def test_node_style_delete_with_id_in_query_works(self, graph, graph_sim):
        """The Node SDK repeats the id in the DELETE query and sends `{}`; the delete works."""
        campaign = await new_campaign(graph)
        reply = await graph("DELETE", f"/v24.0/{campaign}", params={"id": campaign}, json_body={})
        assert ok(reply) == {"success": True}
        [row] = await graph_sim.objects(type="campaign")
        assert row["status"] == "DELETED"


class TestCreateAndRead:
    async def test_create_answers_a_numeric_string_id(self, graph, graph_sim):
        """POST /act_{id}/campaigns answers `{"id": "<digits>"}` and stores the campaign."""
        body = ok(
            await graph(
                "POST",
                f"/v25.0/{ACCOUNT}/campaigns",
                data={
                    "name": "example campaign",
                    "objective": "OUTCOME_TRAFFIC",
                    "status": "PAUSED",
                    "special_ad_categories": "[]",
                },
            )
        )
        assert isinstance(body["id"], str)
        assert body["id"].isdigit()
        [row] = await graph_sim.objects(type="campaign")
        assert row["id"] == body["id"]
        assert row["account_id"] == ACCOUNT
        assert row["status"] == "PAUSED"

    async def test_python_sdk_form_chain_reads_back(self, graph):
        """Campaign, ad set (targeting as JSON text), creative and ad from form bodies read back."""
        tree = await new_tree(graph, "Py")
        adset = ok(
            await graph(
                "GET",
                f"/v25.0/{tree.adset}",
                params={
                    "fields": "name,campaign_id,daily_budget,billing_event,targeting,status,"
                    "effective_status,campaign{name}"
                },
            )
        )
        assert adset == {
            "id": tree.adset,
            "name": "Py ad set",
            "campaign_id": tree.campaign,
            "daily_budget": "1000",
            "billing_event": "IMPRESSIONS",
            "targeting": TARGETING,
            "status": "PAUSED",
            "effective_status": "PAUSED",
            "campaign": {"id": tree.campaign, "name": "Py campaign"},
        }
        ad = ok(
            await graph(
                "GET",
                f"/v25.0/{tree.ad}",
                params={"fields": "name,adset_id,campaign_id,creative,adset{name},campaign{name}"},
            )
        )
        assert ad == {
            "id": tree.ad,
            "name": "Py ad",
            "adset_id": tree.adset,
            "campaign_id": tree.campaign,
            "creative": {"id": tree.creative},
            "adset": {"id": tree.adset, "name": "Py ad set"},
            "campaign": {"id": tree.campaign, "name": "Py campaign"},
        }

    async def test_node_sdk_json_chain_reads_back(self, graph, graph_sim):
        """JSON bodies with native nesting, numbers and Node's extra `"id": "act_1001"` work."""
        edge = f"/v24.0/{ACCOUNT}"
        campaign = ok(
            await graph(
                "POST",
                f"{edge}/campaigns",
                json_body={
                    "name": "node campaign",
                    "objective": "OUTCOME_TRAFFIC",
                    "status": "PAUSED",
                    "special_ad_categories": [],
                    "id": ACCOUNT,
                },
            )
        )["id"]
        adset = ok(
            await graph(
                "POST",
                f"{edge}/adsets",
                json_body={
                    "name": "node ad set",
                    "campaign_id": campaign,
                    "daily_budget": 1000,
                    "billing_event": "IMPRESSIONS",
                    "optimization_goal": "LINK_CLICKS",
                    "status": "PAUSED",
                    "targeting": {
                        "geo_locations": {"countries": ["US", "CA"]},
                        "age_min": 18,
                        "age_max": 65,
                        "publisher_platforms": ["facebook"],
                    },
                    "id": ACCOUNT,
                },
            )
        )["id"]
        creative = ok(
            await graph(
                "POST",
                f"{edge}/adcreatives",
                json_body={"name": "node creative", "title": "t", "id": ACCOUNT},
            )
        )["id"]
        ad = ok(
            await graph(
                "POST",
                f"{edge}/ads",
                json_body={
                    "name": "node ad",
                    "adset_id": adset,
                    "creative": {"creative_id": creative},
                    "status": "PAUSED",
                    "id": ACCOUNT,
                },
            )
        )["id"]
        body = ok(
            await graph(
                "GET",
                f"/v24.0/{adset}",
                params={"fields": "daily_budget,targeting,campaign{name}"},
            )
        )
        assert body["daily_budget"] == "1000"
        assert body["targeting"] == TARGETING
        assert body["campaign"] == {"id": campaign, "name": "node campaign"}
        ad_body = ok(await graph("GET", f"/v24.0/{ad}", params={"fields": "creative,adset_id"}))
        assert ad_body == {"id": ad, "creative": {"id": creative}, "adset_id": adset}
        rows = {r["type"]: r for r in await graph_sim.objects(account=ACCOUNT)}
        assert set(rows) == {"campaign", "adset", "adcreative", "ad"}
        assert rows["ad"]["adset_id"] == adset
        assert rows["ad"]["campaign_id"] == campaign

    async def test_created_time_uses_graph_format(self, graph):
        """created_time and updated_time look like `2026-11-29T01:44:34+0000`."""
        campaign = await new_campaign(graph)
        body = ok(
            await graph("GET", f"/v25.0/{campaign}", params={"fields": "created_time,updated_time"})
        )
        assert GRAPH_TIME.match(body["created_time"]), body
        assert GRAPH_TIME.match(body["updated_time"]), body

    async def test_read_by_id_without_fields_returns_id_and_name(self, graph):
        """GET /{id} with no `fields` answers exactly `{id, name}`."""
        campaign = await new_campaign(graph, "plain")
        assert ok(await graph("GET", f"/v25.0/{campaign}")) == {"id": campaign, "name": "plain"}

    async def test_account_read_returns_requested_fields(self, graph):
        """GET /act_1001?fields=... returns the account's fields; account_id is the bare number."""
        body = ok(
            await graph(
                "GET",
                f"/v25.0/{ACCOUNT}",
                params={"fields": "name,account_id,account_status,currency,disable_reason"},
            )
        )
        assert body == {
            "id": ACCOUNT,
            "name": "Sim Active Account",
            "account_id": "1001",
            "account_status": 1,
            "currency": "USD",
            "disable_reason": 0,
        }

    async def test_multi_id_read_is_keyed_by_id(self, graph):
        """GET /?ids=a,b&fields=name answers an object keyed by each id."""
        first = await new_campaign(graph, "first")
        second = await new_campaign(graph, "second")
        body = ok(
            await graph("GET", "/v25.0/", params={"ids": f"{first},{second}", "fields": "name"})
        )
        assert body == {
            first: {"id": first, "name": "first"},
            second: {"id": second, "name": "second"},
        }

    async def test_multi_id_read_with_unknown_id_is_803(self, graph):
        """An id that does not exist in `ids` fails the whole read with 803."""
        campaign = await new_campaign(graph)
        reply = await graph("GET", "/v25.0/", params={"ids": f"{campaign},120209999999999999"})
        err = assert_graph_error(reply, status=404, code=803)
        assert "120209999999999999" in err["message"]

    async def test_ad_with_unknown_creative_is_refused(self, graph, graph_sim):
        """`creative={"creative_id": <unknown>}` blames `creative` and stores no ad."""
        tree = await new_tree(graph)
        reply = await create(graph, "ads", ad_params(tree.adset, "120209999999999999"))
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["creative"]]
        assert len(await graph_sim.objects(type="ad")) == 1

    async def test_adset_with_unknown_campaign_is_refused(self, graph, graph_sim):
        """An ad set whose campaign_id does not exist blames `campaign_id`."""
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/adsets",
            data={
                "name": "orphan",
                "campaign_id": "120209999999999999",
                "billing_event": "IMPRESSIONS",
                "targeting": json.dumps(TARGETING),
            },
        )
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["campaign_id"]]
        assert await graph_sim.objects(type="adset") == []

    async def test_adset_under_another_accounts_campaign_is_refused(self, graph, graph_sim):
        """An ad set in act_1001 cannot hang under a campaign of act_1002."""
        foreign = await new_campaign(graph, account="act_1002")
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/adsets",
            data={
                "name": "stray",
                "campaign_id": foreign,
                "billing_event": "IMPRESSIONS",
                "targeting": json.dumps(TARGETING),
            },
        )
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["campaign_id"]]
        assert await graph_sim.objects(type="adset") == []

    async def test_get_carries_etag_and_if_none_match_gets_304(self, graph):
        """A GET carries an ETag; repeating it with If-None-Match answers 304 with no body."""
        campaign = await new_campaign(graph)
        first = await graph("GET", f"/v25.0/{campaign}")
        assert first.status == 200
        etag = first.headers["ETag"]
        again = await graph("GET", f"/v25.0/{campaign}", headers={"If-None-Match": etag})
        assert again.status == 304
        assert again.body is None

    async def test_etag_changes_when_the_object_changes(self, graph):
        """After an update the old ETag no longer matches: 200 with the new body."""
        campaign = await new_campaign(graph, "before")
        etag = (await graph("GET", f"/v25.0/{campaign}")).headers["ETag"]
        ok(await graph("POST", f"/v25.0/{campaign}", data={"name": "after"}))
        reply = await graph("GET", f"/v25.0/{campaign}", headers={"If-None-Match": etag})
        assert reply.status == 200
        assert reply.body == {"id": campaign, "name": "after"}
        assert reply.headers["ETag"] != etag

    async def test_errors_and_writes_carry_no_etag(self, graph):
        """Only successful GETs carry an ETag."""
        missing = await graph("GET", "/v25.0/120209999999999999")
        assert missing.status == 400
        assert "ETag" not in missing.headers
        campaign = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/campaigns",
            data={"name": "x", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        )
        assert campaign.status == 200
        assert "ETag" not in campaign.headers


class TestEdges:
    async def test_account_edges_list_their_objects(self, graph):
        """/act_{id}/campaigns, /adsets, /ads and /adcreatives list the account's objects."""
        tree = await new_tree(graph)
        account = f"/v25.0/{ACCOUNT}"
        assert ids_of(ok(await graph("GET", f"{account}/campaigns"))) == [tree.campaign]
        assert ids_of(ok(await graph("GET", f"{account}/adsets"))) == [tree.adset]
        assert ids_of(ok(await graph("GET", f"{account}/ads"))) == [tree.ad]
        assert ids_of(ok(await graph("GET", f"{account}/adcreatives"))) == [tree.creative]
        assert ok(await graph("GET", "/v25.0/act_1002/campaigns"))["data"] == []

    async def test_edge_items_without_fields_carry_only_id(self, graph):
        """An edge read with no `fields` answers each item as `{id}`."""
        campaign = await new_campaign(graph)
        body = ok(await graph("GET", f"/v25.0/{ACCOUNT}/campaigns"))
        assert body["data"] == [{"id": campaign}]

    async def test_parent_edges_list_only_their_children(self, graph):
        """/{campaign}/adsets, /{campaign}/ads and /{adset}/ads are scoped to that parent."""
        one = await new_tree(graph, "one")
        two = await new_tree(graph, "two")
        second_ad = await new_ad(graph, one.adset, one.creative, "one second ad")
        assert ids_of(ok(await graph("GET", f"/v25.0/{one.campaign}/adsets"))) == [one.adset]
        assert ids_of(ok(await graph("GET", f"/v25.0/{one.campaign}/ads"))) == [second_ad, one.ad]
        assert ids_of(ok(await graph("GET", f"/v25.0/{one.adset}/ads"))) == [second_ad, one.ad]
        assert ids_of(ok(await graph("GET", f"/v25.0/{two.adset}/ads"))) == [two.ad]

    async def test_edge_renders_requested_fields(self, graph):
        """`fields` on an edge shape each item, nested selections included."""
        tree = await new_tree(graph, "F")
        body = ok(
            await graph(
                "GET",
                f"/v25.0/{ACCOUNT}/ads",
                params={"fields": "name,status,campaign{name},adset{id}"},
            )
        )
        assert body["data"] == [
            {
                "id": tree.ad,
                "name": "F ad",
                "status": "PAUSED",
                "campaign": {"id": tree.campaign, "name": "F campaign"},
                "adset": {"id": tree.adset},
            }
        ]

    @pytest.mark.parametrize(
        ("operator", "value", "expected"),
        [
            ("EQUAL", "Alpha One", ["Alpha One"]),
            ("IN", ["Alpha One", "Beta Three"], ["Beta Three", "Alpha One"]),
            ("CONTAIN", "ALPHA", ["Alpha Two", "Alpha One"]),
            ("NOT_EQUAL", "Alpha One", ["Beta Three", "Alpha Two"]),
            ("STARTS_WITH", "beta", ["Beta Three"]),
            ("NOT_CONTAIN", "alpha", ["Beta Three"]),
        ],
    )
    async def test_filtering_on_name(self, graph, operator, value, expected):
        """`filtering` on name supports EQUAL, IN, CONTAIN (any case), NOT_EQUAL, STARTS_WITH."""
        for name in ("Alpha One", "Alpha Two", "Beta Three"):
            await new_campaign(graph, name)
        filtering = [{"field": "name", "operator": operator, "value": value}]
        body = ok(
            await graph(
                "GET",
                f"/v25.0/{ACCOUNT}/campaigns",
                params={"fields": "name", "filtering": json.dumps(filtering)},
            )
        )
        assert [item["name"] for item in body["data"]] == expected

    async def test_filtering_on_id(self, graph):
        """`filtering` on id with EQUAL and IN picks exactly those objects."""
        first = await new_campaign(graph, "a")
        second = await new_campaign(graph, "b")
        third = await new_campaign(graph, "c")
        edge = f"/v25.0/{ACCOUNT}/campaigns"
        equal = [{"field": "id", "operator": "EQUAL", "value": second}]
        body = ok(await graph("GET", edge, params={"filtering": json.dumps(equal)}))
        assert ids_of(body) == [second]
        within = [{"field": "id", "operator": "IN", "value": [first, third]}]
        body = ok(await graph("GET", edge, params={"filtering": json.dumps(within)}))
        assert ids_of(body) == [third, first]

    async def test_filtering_on_effective_status_sees_parent_pauses(self, graph):
        """An active ad set under a paused campaign is CAMPAIGN_PAUSED, and filters as such."""
        live = await new_campaign(graph, "live", status="ACTIVE")
        paused = await new_campaign(graph, "paused", status="PAUSED")
        live_adset = await new_adset(graph, live, "under live", status="ACTIVE")
        held_adset = await new_adset(graph, paused, "under paused", status="ACTIVE")
        edge = f"/v25.0/{ACCOUNT}/adsets"
        for status, expected in (("CAMPAIGN_PAUSED", held_adset), ("ACTIVE", live_adset)):
            filtering = [{"field": "effective_status", "operator": "IN", "value": [status]}]
            body = ok(
                await graph(
                    "GET",
                    edge,
                    params={"fields": "effective_status", "filtering": json.dumps(filtering)},
                )
            )
            assert body["data"] == [{"id": expected, "effective_status": status}]

    async def test_effective_status_param_selects_paused(self, graph):
        """`effective_status=["PAUSED"]` on an edge lists only paused objects."""
        await new_campaign(graph, "on", status="ACTIVE")
        off = await new_campaign(graph, "off", status="PAUSED")
        body = ok(
            await graph(
                "GET",
                f"/v25.0/{ACCOUNT}/campaigns",
                params={"effective_status": '["PAUSED"]'},
            )
        )
        assert ids_of(body) == [off]

    async def test_filtering_on_created_time_in_unix_seconds(self, graph, graph_sim):
        """`created_time GREATER_THAN <unix seconds>` splits objects made before and after."""
        old = [await new_campaign(graph, f"old {i}") for i in range(2)]
        now = await graph_sim.advance(60)
        new = [await new_campaign(graph, f"new {i}") for i in range(2)]
        edge = f"/v25.0/{ACCOUNT}/campaigns"
        cut = int(now) - 30
        after = [{"field": "created_time", "operator": "GREATER_THAN", "value": cut}]
        body = ok(await graph("GET", edge, params={"filtering": json.dumps(after)}))
        assert ids_of(body) == new[::-1]
        before = [{"field": "created_time", "operator": "LESS_THAN", "value": cut}]
        body = ok(await graph("GET", edge, params={"filtering": json.dumps(before)}))
        assert ids_of(body) == old[::-1]

    async def test_cursor_paging_walks_every_item_once_newest_first(self, graph):
        """Following `next` with limit=3 yields each campaign once, newest first, then stops."""
        created = [await new_campaign(graph, f"c{i}") for i in range(7)]
        reply = await graph("GET", f"/v25.0/{ACCOUNT}/campaigns", params={"limit": "3"})
        pages: list[list[str]] = []
        while True:
            body = ok(reply)
            pages.append(ids_of(body))
            assert set(body["paging"]["cursors"]) == {"before", "after"}
            next_url = body["paging"].get("next")
            if next_url is None:
                break
            assert len(pages) < 5, "paging does not end"
            assert next_url.startswith(graph.base + f"/v25.0/{ACCOUNT}/campaigns?")
            assert "limit=3" in next_url
            reply = await graph("GET", next_url)
        assert [len(p) for p in pages] == [3, 3, 1]
        walked = [item for p in pages for item in p]
        assert walked == created[::-1]
        assert len(set(walked)) == len(walked)

    async def test_next_link_is_usable_as_is(self, graph):
        """A `next` link works verbatim: like Graph's, it carries the request's access_token."""
        # The Node SDK's Cursor calls api.call("GET", paging.next) and a string path gets no
        # token added (facebook-nodejs-business-sdk src/cursor.js, src/api.js).
        for i in range(3):
            await new_campaign(graph, f"c{i}")
        first = ok(await graph("GET", f"/v25.0/{ACCOUNT}/campaigns", params={"limit": "2"}))
        second = ok(await graph("GET", first["paging"]["next"], token=None))
        assert len(second["data"]) == 1

    async def test_after_cursor_pages_without_following_next(self, graph):
        """Sending `after=<cursors.after>` (as the Python SDK does) returns the following page."""
        created = [await new_campaign(graph, f"c{i}") for i in range(5)]
        edge = f"/v25.0/{ACCOUNT}/campaigns"
        first = ok(await graph("GET", edge, params={"limit": "2"}))
        assert "previous" not in first["paging"]
        cursor = first["paging"]["cursors"]["after"]
        second = ok(await graph("GET", edge, params={"limit": "2", "after": cursor}))
        assert ids_of(first) + ids_of(second) == created[::-1][:4]

    async def test_before_cursor_goes_back_a_page(self, graph):
        """The second page's `before` cursor (and its `previous` link) returns the first page."""
        for i in range(6):
            await new_campaign(graph, f"c{i}")
        edge = f"/v25.0/{ACCOUNT}/campaigns"
        first = ok(await graph("GET", edge, params={"limit": "2"}))
        second = ok(
            await graph(
                "GET", edge, params={"limit": "2", "after": first["paging"]["cursors"]["after"]}
            )
        )
        before = second["paging"]["cursors"]["before"]
        back = ok(await graph("GET", edge, params={"limit": "2", "before": before}))
        assert ids_of(back) == ids_of(first)
        previous = ok(await graph("GET", second["paging"]["previous"]))
        assert ids_of(previous) == ids_of(first)

    async def test_last_page_has_no_next(self, graph):
        """A page that holds everything has cursors but no `next`."""
        await new_campaign(graph)
        body = ok(await graph("GET", f"/v25.0/{ACCOUNT}/campaigns", params={"limit": "5"}))
        assert "next" not in body["paging"]
        assert "previous" not in body["paging"]

    async def test_summary_true_gives_total_count(self, graph):
        """`summary=true` adds `summary.total_count` of all matches, not just this page."""
        for i in range(4):
            await new_campaign(graph, f"c{i}", status="ACTIVE" if i % 2 else "PAUSED")
        edge = f"/v25.0/{ACCOUNT}/campaigns"
        body = ok(await graph("GET", edge, params={"limit": "1", "summary": "true"}))
        assert body["summary"] == {"total_count": 4}
        assert len(body["data"]) == 1
        paused = ok(
            await graph(
                "GET",
                edge,
                params={"summary": "true", "effective_status": '["PAUSED"]'},
            )
        )
        assert paused["summary"] == {"total_count": 2}

    @pytest.mark.parametrize(
        "filtering",
        [
            "not json",
            '[{"field":"name"',
            '{"field":"name","operator":"EQUAL","value":"x"}',
            '[{"field":"bogus","operator":"EQUAL","value":"x"}]',
            '[{"field":"name","operator":"SOUNDS_LIKE","value":"x"}]',
            '[{"field":"name","operator":"IN","value":"x"}]',
            '["name"]',
            '[{"field":"name","operator":"EQUAL"}]',
        ],
        ids=[
            "not-json",
            "truncated",
            "object",
            "unknown-field",
            "unknown-operator",
            "in-needs-list",
            "not-an-entry",
            "no-value",
        ],
    )
    async def test_bad_filtering_is_100(self, graph, filtering):
        """Malformed `filtering`, unknown fields and unknown operators are 100 blaming filtering."""
        reply = await graph("GET", f"/v25.0/{ACCOUNT}/campaigns", params={"filtering": filtering})
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["filtering"]]


class TestUpdatesAndDeletes:
    async def test_update_name_and_status_answers_success(self, graph, graph_sim):
        """POST /{id} with name and status answers `{"success": true}` and changes both."""
        campaign = await new_campaign(graph, "old name", status="PAUSED")
        reply = await graph(
            "POST", f"/v25.0/{campaign}", data={"name": "new name", "status": "ACTIVE"}
        )
        assert ok(reply) == {"success": True}
        body = ok(await graph("GET", f"/v25.0/{campaign}", params={"fields": "name,status"}))
        assert body == {"id": campaign, "name": "new name", "status": "ACTIVE"}
        [row] = await graph_sim.objects(type="campaign")
        assert row["name"] == "new name"

    async def test_update_moves_updated_time_only(self, graph, graph_sim):
        """An edit made later moves updated_time past created_time, which stays put."""
        campaign = await new_campaign(graph)
        fields = {"fields": "created_time,updated_time"}
        before = ok(await graph("GET", f"/v25.0/{campaign}", params=fields))
        await graph_sim.advance(120)
        ok(await graph("POST", f"/v25.0/{campaign}", data={"name": "later"}))
        after = ok(await graph("GET", f"/v25.0/{campaign}", params=fields))
        assert after["created_time"] == before["created_time"]
        assert after["updated_time"] > before["updated_time"]

    async def test_update_of_budget_reads_back_as_string(self, graph):
        """An edited daily_budget comes back as a string, like every Graph number field."""
        tree = await new_tree(graph)
        ok(await graph("POST", f"/v25.0/{tree.adset}", json_body={"daily_budget": 2500}))
        body = ok(await graph("GET", f"/v25.0/{tree.adset}", params={"fields": "daily_budget"}))
        assert body == {"id": tree.adset, "daily_budget": "2500"}

    async def test_delete_answers_success_and_object_stays_readable(self, graph):
        """DELETE /{id} answers `{"success": true}`; by id the object still reads, DELETED."""
        campaign = await new_campaign(graph, "doomed")
        assert ok(await graph("DELETE", f"/v25.0/{campaign}")) == {"success": True}
        body = ok(
            await graph(
                "GET", f"/v25.0/{campaign}", params={"fields": "name,status,effective_status"}
            )
        )
        assert body == {
            "id": campaign,
            "name": "doomed",
            "status": "DELETED",
            "effective_status": "DELETED",
        }

    async def test_deleted_object_is_hidden_from_edges_unless_asked_for(self, graph):
        """Edges hide deleted objects unless effective_status includes DELETED."""
        kept = await new_campaign(graph, "kept")
        gone = await new_campaign(graph, "gone")
        ok(await graph("DELETE", f"/v25.0/{gone}"))
        edge = f"/v25.0/{ACCOUNT}/campaigns"
        assert ids_of(ok(await graph("GET", edge))) == [kept]
        everything = ok(
            await graph("GET", edge, params={"effective_status": '["ACTIVE","PAUSED","DELETED"]'})
        )
        assert ids_of(everything) == [gone, kept]
        only_deleted = ok(await graph("GET", edge, params={"effective_status": '["DELETED"]'}))
        assert ids_of(only_deleted) == [gone]

    async def test_deleting_a_campaign_deletes_its_adsets_and_ads(self, graph, graph_sim):
        """DELETE of a campaign marks its ad sets and ads DELETED; other trees are untouched."""
        doomed = await new_tree(graph, "doomed")
        extra_ad = await new_ad(graph, doomed.adset, doomed.creative, "second")
        kept = await new_tree(graph, "kept")
        ok(await graph("DELETE", f"/v25.0/{doomed.campaign}"))
        status = {row["id"]: row["status"] for row in await graph_sim.objects()}
        for object_id in (doomed.campaign, doomed.adset, doomed.ad, extra_ad):
            assert status[object_id] == "DELETED", object_id
        for object_id in (kept.campaign, kept.adset, kept.ad):
            assert status[object_id] == "PAUSED", object_id
        ads = ok(await graph("GET", f"/v25.0/{ACCOUNT}/ads"))
        assert ids_of(ads) == [kept.ad]

    async def test_deleting_an_adset_deletes_its_ads_only(self, graph, graph_sim):
        """DELETE of an ad set marks its ads DELETED and leaves the campaign as it was."""
        tree = await new_tree(graph)
        ok(await graph("DELETE", f"/v25.0/{tree.adset}"))
        status = {row["id"]: row["status"] for row in await graph_sim.objects()}
        assert status[tree.adset] == "DELETED"
        assert status[tree.ad] == "DELETED"
        assert status[tree.campaign] == "PAUSED"

    async def test_status_deleted_via_update_deletes_like_delete(self, graph, graph_sim):
        """POST /{id} status=DELETED answers success and deletes the object and its children."""
        tree = await new_tree(graph)
        reply = await graph("POST", f"/v25.0/{tree.campaign}", data={"status": "DELETED"})
        assert ok(reply) == {"success": True}
        status = {row["id"]: row["status"] for row in await graph_sim.objects()}
        assert status[tree.campaign] == status[tree.adset] == status[tree.ad] == "DELETED"

    @pytest.mark.parametrize(("which", "subcode"), [("adset", 1487056), ("campaign", 1487566)])
    @pytest.mark.parametrize(
        "change", [{"status": "PAUSED"}, {"daily_budget": "2000"}], ids=["status", "budget"]
    )
    async def test_editing_a_deleted_object_other_than_its_name_is_refused(
        self, graph, graph_sim, which, subcode, change
    ):
        """A deleted ad set (1487056) or campaign (1487566) accepts only name edits."""
        tree = await new_tree(graph)
        target = tree.adset if which == "adset" else tree.campaign
        ok(await graph("DELETE", f"/v25.0/{target}"))
        reply = await graph("POST", f"/v25.0/{target}", data=change)
        assert_graph_error(
            reply, status=400, code=100, subcode=subcode, type_=API, is_transient=False
        )
        [row] = await graph_sim.objects(type=which)
        assert row["status"] == "DELETED"

    async def test_renaming_a_deleted_adset_is_allowed(self, graph):
        """The name of a deleted ad set can still change."""
        tree = await new_tree(graph)
        ok(await graph("DELETE", f"/v25.0/{tree.adset}"))
        reply = await graph("POST", f"/v25.0/{tree.adset}", data={"name": "renamed"})
        assert ok(reply) == {"success": True}
        body = ok(await graph("GET", f"/v25.0/{tree.adset}", params={"fields": "name,status"}))
        assert body == {"id": tree.adset, "name": "renamed", "status": "DELETED"}

    async def test_second_delete_also_succeeds(self, graph, graph_sim):
        """Deleting an already deleted object answers success again."""
        campaign = await new_campaign(graph)
        assert ok(await graph("DELETE", f"/v25.0/{campaign}")) == {"success": True}
        assert ok(await graph("DELETE", f"/v25.0/{campaign}")) == {"success": True}
        [row] = await graph_sim.objects(type="campaign")
        assert row["status"] == "DELETED"

    async def test_archived_object_can_only_move_on_to_deleted(self, graph):
        """An ARCHIVED campaign cannot come back to ACTIVE (100 blaming status); DELETED works."""
        campaign = await new_campaign(graph)
        assert ok(await graph("POST", f"/v25.0/{campaign}", data={"status": "ARCHIVED"})) == {
            "success": True
        }
        reply = await graph("POST", f"/v25.0/{campaign}", data={"status": "ACTIVE"})
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["status"]]
        ok(await graph("POST", f"/v25.0/{campaign}", data={"status": "DELETED"}))
        body = ok(await graph("GET", f"/v25.0/{campaign}", params={"fields": "status"}))
        assert body == {"id": campaign, "status": "DELETED"}

    async def test_archived_object_is_hidden_from_edges_unless_asked_for(self, graph):
        """Edges hide ARCHIVED objects unless effective_status includes ARCHIVED."""
        kept = await new_campaign(graph, "kept")
        shelved = await new_campaign(graph, "shelved")
        ok(await graph("POST", f"/v25.0/{shelved}", data={"status": "ARCHIVED"}))
        edge = f"/v25.0/{ACCOUNT}/campaigns"
        assert ids_of(ok(await graph("GET", edge))) == [kept]
        archived = ok(await graph("GET", edge, params={"effective_status": '["ARCHIVED"]'}))
        assert ids_of(archived) == [shelved]

    @pytest.mark.parametrize(
        ("which", "change", "field", "subcode"),
        [
            ("campaign", {"objective": "OUTCOME_SALES"}, "objective", UNPINNED),
            ("adset", {"daily_budget": "2000"}, "daily_budget", UNPINNED),
            ("ad", {"conversion_domain": "example.com"}, "conversion_domain", 1885088),
        ],
        ids=["campaign", "adset", "ad"],
    )
    async def test_archived_object_accepts_only_name_and_status_edits(
        self, graph, which, change, field, subcode
    ):
        """Editing an ARCHIVED object beyond name and status is refused (ad: 100/1885088)."""
        tree = await new_tree(graph)
        target = getattr(tree, which)
        before = ok(await graph("GET", f"/v25.0/{target}", params={"fields": field}))
        ok(await graph("POST", f"/v25.0/{target}", data={"status": "ARCHIVED"}))
        reply = await graph("POST", f"/v25.0/{target}", data=change)
        assert_graph_error(reply, status=400, code=100, subcode=subcode, type_=UNPINNED)
        after = ok(await graph("GET", f"/v25.0/{target}", params={"fields": field}))
        assert after == before

    async def test_renaming_an_archived_object_is_allowed(self, graph):
        """The name of an ARCHIVED ad set can still change."""
        tree = await new_tree(graph)
        ok(await graph("POST", f"/v25.0/{tree.adset}", data={"status": "ARCHIVED"}))
        ok(await graph("POST", f"/v25.0/{tree.adset}", data={"name": "renamed"}))
        body = ok(await graph("GET", f"/v25.0/{tree.adset}", params={"fields": "name,status"}))
        assert body == {"id": tree.adset, "name": "renamed", "status": "ARCHIVED"}

    async def test_delete_of_unknown_id_is_100_33(self, graph):
        """DELETE of an id that does not exist is 100/33 "Unsupported delete request"."""
        reply = await graph("DELETE", "/v25.0/120209999999999999")
        err = assert_graph_error(
            reply, status=400, code=100, subcode=33, type_=METHOD, is_transient=False
        )
        assert err["message"].startswith("Unsupported delete request.")

    async def test_adset_under_deleted_campaign_is_refused(self, graph, graph_sim):
        """A new ad set cannot be placed under a deleted campaign; it blames campaign_id."""
        campaign = await new_campaign(graph)
        ok(await graph("DELETE", f"/v25.0/{campaign}"))
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/adsets",
            data={
                "name": "late",
                "campaign_id": campaign,
                "billing_event": "IMPRESSIONS",
                "targeting": json.dumps(TARGETING),
            },
        )
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["campaign_id"]]
        assert await graph_sim.objects(type="adset") == []


class TestImages:
    async def test_multipart_upload_answers_images_keyed_by_file_name(self, graph, graph_sim):
        """A multipart upload answers `{"images": {<file name>: {hash, url, width, height}}}`."""
        form = aiohttp.FormData()
        form.add_field("filename", png(3, 2), filename="pixel.png", content_type="image/png")
        body = ok(await graph("POST", f"/v25.0/{ACCOUNT}/adimages", data=form))
        assert list(body) == ["images"]
        assert list(body["images"]) == ["pixel.png"]
        image = body["images"]["pixel.png"]
        assert re.fullmatch(r"[0-9a-f]{32}", image["hash"]), image
        assert image["url"].startswith("https://")
        assert image["width"] == 3
        assert image["height"] == 2
        assert image["name"] == "pixel.png"
        for key in ("url_128", "url_256", "url_256_height", "url_256_width"):
            assert key in image
        [row] = await graph_sim.objects(type="adimage")
        assert row["id"] == f"1001:{image['hash']}"

    async def test_base64_bytes_upload_gives_the_same_hash(self, graph):
        """Uploading the same image as base64 `bytes` gives the hash of the multipart upload."""
        data = png(4, 4)
        form = aiohttp.FormData()
        form.add_field("filename", data, filename="a.png", content_type="image/png")
        multipart = ok(await graph("POST", f"/v25.0/{ACCOUNT}/adimages", data=form))
        encoded = ok(
            await graph(
                "POST",
                f"/v25.0/{ACCOUNT}/adimages",
                data={"bytes": base64.b64encode(data).decode()},
            )
        )
        [first] = multipart["images"].values()
        [second] = encoded["images"].values()
        assert second["hash"] == first["hash"]
        assert (second["width"], second["height"]) == (4, 4)

    async def test_uploaded_image_is_read_back_by_hash(self, graph):
        """GET /act_{id}/adimages?hashes=["<hash>"] returns just that image."""
        hashes = []
        for size in (1, 2):
            encoded = base64.b64encode(png(size, size)).decode()
            body = ok(await graph("POST", f"/v25.0/{ACCOUNT}/adimages", data={"bytes": encoded}))
            [image] = body["images"].values()
            hashes.append(image["hash"])
        body = ok(
            await graph(
                "GET",
                f"/v25.0/{ACCOUNT}/adimages",
                params={"hashes": json.dumps([hashes[1]]), "fields": "hash,width,height"},
            )
        )
        assert body["data"] == [
            {"id": f"1001:{hashes[1]}", "hash": hashes[1], "width": 2, "height": 2}
        ]

    async def test_delete_image_by_hash(self, graph, graph_sim):
        """DELETE /act_{id}/adimages?hash= answers success and the image no longer lists."""
        encoded = base64.b64encode(png(2, 2)).decode()
        body = ok(await graph("POST", f"/v25.0/{ACCOUNT}/adimages", data={"bytes": encoded}))
        [image] = body["images"].values()
        reply = await graph("DELETE", f"/v25.0/{ACCOUNT}/adimages", params={"hash": image["hash"]})
        assert ok(reply) == {"success": True}
        listed = ok(
            await graph(
                "GET",
                f"/v25.0/{ACCOUNT}/adimages",
                params={"hashes": json.dumps([image["hash"]])},
            )
        )
        assert listed["data"] == []
        [row] = await graph_sim.objects(type="adimage")
        assert row["status"] == "DELETED"

    async def test_upload_without_an_image_is_refused(self, graph):
        """POST /act_{id}/adimages with neither a file nor `bytes` is 100 blaming bytes."""
        reply = await graph("POST", f"/v25.0/{ACCOUNT}/adimages", data={"name": "x"})
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["bytes"]]

    async def test_bytes_that_are_not_base64_are_refused(self, graph, graph_sim):
        """A `bytes` value that is not base64 is 100 blaming bytes; nothing stored."""
        reply = await graph(
            "POST", f"/v25.0/{ACCOUNT}/adimages", data={"bytes": "***not base64***"}
        )
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["bytes"]]
        assert await graph_sim.objects(type="adimage") == []


class TestBadInput:
    async def test_malformed_json_body_is_100(self, graph, graph_sim):
        """A body declared application/json that does not parse is a Graph 400/100, not a 500."""
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/campaigns",
            data=b'{"name": "x", ',
            headers={"Content-Type": "application/json"},
        )
        assert_graph_error(reply, status=400, code=100, is_transient=False)
        assert await graph_sim.objects() == []

    @pytest.mark.parametrize("doc", [["name", "x"], 42, "name=x", None], ids=repr)
    async def test_json_body_that_is_not_an_object_is_100(self, graph, doc):
        """A JSON body must be an object; a list, number, string or null is 400/100."""
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/campaigns",
            data=json.dumps(doc).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert_graph_error(reply, status=400, code=100, is_transient=False)

    async def test_invalid_utf8_form_body_is_100(self, graph):
        """A form body that is not UTF-8 is a Graph 400/100."""
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/campaigns",
            data=b"name=\xff\xfe",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert_graph_error(reply, status=400, code=100, is_transient=False)

    @pytest.mark.parametrize(
        "content_type",
        ["multipart/form-data", "multipart/form-data; boundary=xyz"],
        ids=["no-boundary", "garbage"],
    )
    async def test_broken_multipart_body_is_100(self, graph, content_type):
        """A multipart body that cannot be read is a Graph 400/100, not a 500."""
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/adimages",
            data=b"this is not multipart at all",
            headers={"Content-Type": content_type},
        )
        assert_graph_error(reply, status=400, code=100, is_transient=False)

    @pytest.mark.parametrize("method", ["PUT", "PATCH"])
    @pytest.mark.parametrize("target", ["object", "edge"])
    async def test_put_and_patch_are_unsupported(self, graph, graph_sim, method, target):
        """PUT and PATCH are 100/33 "Unsupported <method> request" and change nothing."""
        campaign = await new_campaign(graph, "unchanged")
        path = f"/v25.0/{campaign}" if target == "object" else f"/v25.0/{ACCOUNT}/campaigns"
        reply = await graph(method, path, data={"name": "changed"})
        err = assert_graph_error(
            reply, status=400, code=100, subcode=33, type_=METHOD, is_transient=False
        )
        assert err["message"].lower().startswith(f"unsupported {method.lower()} request")
        assert [row["name"] for row in await graph_sim.objects()] == ["unchanged"]

    @pytest.mark.parametrize(
        "cursor",
        [
            "garbage!!",
            base64.urlsafe_b64encode(b"nope").decode(),
            base64.urlsafe_b64encode(b"seq:abc").decode(),
            base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
        ],
        ids=["not-base64", "wrong-prefix", "not-a-number", "not-utf8"],
    )
    @pytest.mark.parametrize("param", ["after", "before"])
    async def test_invalid_cursor_is_100(self, graph, param, cursor):
        """A cursor Graph did not issue is 100 blaming the cursor parameter."""
        await new_campaign(graph)
        reply = await graph(
            "GET", f"/v25.0/{ACCOUNT}/campaigns", params={param: cursor, "limit": "2"}
        )
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [[param]]

    @pytest.mark.parametrize("limit", ["abc", "-1", "1.5"])
    async def test_bad_limit_is_100(self, graph, limit):
        """`limit` that is not a non-negative integer is 100 blaming limit."""
        reply = await graph("GET", f"/v25.0/{ACCOUNT}/campaigns", params={"limit": limit})
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["limit"]]

    async def test_json_values_of_the_wrong_type_are_refused(self, graph, graph_sim):
        """An ad whose creative is a list, or an ad set whose campaign_id is an object, is 100."""
        tree = await new_tree(graph)
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/ads",
            json_body={"name": "x", "adset_id": tree.adset, "creative": [tree.creative]},
        )
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["creative"]]
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/adsets",
            json_body={
                "name": "x",
                "campaign_id": {"id": tree.campaign},
                "billing_event": "IMPRESSIONS",
                "targeting": TARGETING,
            },
        )
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["campaign_id"]]
        assert len(await graph_sim.objects()) == 4

    async def test_nested_values_in_image_hashes_are_100(self, graph):
        """`hashes` whose items are not strings is a Graph 400/100, not a 500."""
        reply = await graph(
            "GET",
            f"/v25.0/{ACCOUNT}/adimages",
            params={"hashes": '[{"hash": "abc"}]'},
        )
        assert_graph_error(reply, status=400, code=100, type_=UNPINNED)

    async def test_bad_effective_status_param_is_100(self, graph):
        """`effective_status` that is a JSON object is 100 blaming effective_status."""
        reply = await graph(
            "GET",
            f"/v25.0/{ACCOUNT}/campaigns",
            params={"effective_status": '{"status": "PAUSED"}'},
        )
        err = assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        assert blame(err) == [["effective_status"]]


class TestAccountsAndLimits:
    async def test_disabled_account_shows_status_and_disable_reason(self, graph):
        """act_2001 reads as account_status 2 with its disable_reason."""
        body = ok(
            await graph(
                "GET",
                f"/v25.0/{DISABLED_ACCOUNT}",
                params={"fields": "account_status,disable_reason,name"},
            )
        )
        assert body == {
            "id": DISABLED_ACCOUNT,
            "account_status": 2,
            "disable_reason": 1,
            "name": "Sim Disabled Account",
        }

    async def test_account_disabled_through_control_api_refuses_writes(self, graph, graph_sim):
        """After put_account(account_status=2) writes are 403/200; reads and objects remain."""
        campaign = await new_campaign(graph, account="act_1002")
        await graph_sim.put_account(id="act_1002", account_status=2, disable_reason=3)
        reply = await graph("POST", f"/v25.0/{campaign}", data={"name": "renamed"})
        assert_graph_error(reply, status=403, code=200, is_transient=False)
        reply = await graph(
            "POST",
            "/v25.0/act_1002/campaigns",
            data={"name": "x", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        )
        assert_graph_error(reply, status=403, code=200, is_transient=False)
        assert ids_of(ok(await graph("GET", "/v25.0/act_1002/campaigns"))) == [campaign]
        node = ok(await graph("GET", "/v25.0/act_1002", params={"fields": "account_status"}))
        assert node["account_status"] == 2

    async def test_third_ad_in_an_adset_over_the_limit_is_refused(self, graph, graph_sim):
        """With ads_per_adset=2 the third ad in that ad set is 100 and nothing is stored."""
        await graph_sim.set_limits(object_limits={"ads_per_adset": 2})
        tree = await new_tree(graph)
        await new_ad(graph, tree.adset, tree.creative, "second")
        reply = await create(graph, "ads", ad_params(tree.adset, tree.creative, "third"))
        assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        rows = await graph_sim.objects(type="ad", adset_id=tree.adset)
        assert sorted(row["name"] for row in rows) == ["T ad", "second"]
        other = await new_adset(graph, tree.campaign, "other")
        await new_ad(graph, other, tree.creative, "elsewhere")

    async def test_deleted_ads_do_not_count_toward_the_adset_limit(self, graph, graph_sim):
        """Once an ad is deleted, its slot under ads_per_adset is free again."""
        await graph_sim.set_limits(object_limits={"ads_per_adset": 1})
        tree = await new_tree(graph)
        assert_graph_error(
            await create(graph, "ads", ad_params(tree.adset, tree.creative, "refused")),
            status=400,
            code=100,
            type_=API,
        )
        ok(await graph("DELETE", f"/v25.0/{tree.ad}"))
        await new_ad(graph, tree.adset, tree.creative, "replacement")

    async def test_campaigns_per_account_limit_is_per_account(self, graph, graph_sim):
        """With campaigns_per_account=1 a second campaign is refused in act_1001, not act_1002."""
        await graph_sim.set_limits(object_limits={"campaigns_per_account": 1})
        await new_campaign(graph, "first")
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/campaigns",
            data={"name": "second", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        )
        assert_graph_error(reply, status=400, code=100, type_=API, is_transient=False)
        await new_campaign(graph, "elsewhere", account="act_1002")
        names = sorted(row["name"] for row in await graph_sim.objects(type="campaign"))
        assert names == ["elsewhere", "first"]

    async def test_validate_only_checks_without_storing(self, graph, graph_sim):
        """`execution_options=["validate_only"]` answers success and stores nothing."""
        reply = await graph(
            "POST",
            f"/v25.0/{ACCOUNT}/campaigns",
            data={
                "name": "dry run",
                "objective": "OUTCOME_TRAFFIC",
                "special_ad_categories": "[]",
                "execution_options": '["validate_only"]',
            },
        )
        assert ok(reply) == {"success": True}
        assert await graph_sim.objects() == []
