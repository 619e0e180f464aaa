"""The simulator answers the official SDKs' requests as Graph would.

The Python SDK (`facebook-business`) is driven for real, pointed at the simulator as
graph-api-notes Part B §1 describes. Its calls block, so they run in a worker thread while the
simulator answers on the test's event loop. The Node SDK's requests are replayed with aiohttp
in the shapes captured in Part B §2 (JSON bodies with the parent's id, `{}` on GET and DELETE,
`?id=` on DELETE, the token last in the query).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from facebook_business.adobjects.ad import Ad
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.adcreative import AdCreative
from facebook_business.adobjects.adset import AdSet
from facebook_business.adobjects.campaign import Campaign
from facebook_business.api import FacebookAdsApi, FacebookResponse
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

from gateway.testing import SimHandle
from tests.sim.support import (
    ACCOUNT,
    TARGETING,
    TOKEN,
    Graph,
    ad_params,
    adset_params,
    campaign_params,
    node_op_body,
)

STORY = {
    "page_id": "100000000000001",
    "link_data": {"link": "https://example.com", "message": "hi"},
}
NODE_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/plain, */*",
    "User-Agent": "fbbizsdk-nodejs-v24.0.0",
}


@pytest.fixture
def graph_url(graph_sim: SimHandle) -> Iterator[str]:
    """Point the SDK's class-level Graph host at the simulator; restore it afterwards."""
    saved = FacebookSession.GRAPH
    FacebookSession.GRAPH = graph_sim.url
    try:
        yield graph_sim.url
    finally:
        FacebookSession.GRAPH = saved


@pytest.fixture
def sdk_init(graph_url: str) -> Iterator[Callable[[str], FacebookAdsApi]]:
    """`sdk_init(token)`: FacebookAdsApi.init against the simulator, crash reporter off."""
    saved = FacebookAdsApi.get_default_api()
    made: list[FacebookAdsApi] = []

    def init(token: str) -> FacebookAdsApi:
        api = FacebookAdsApi.init(access_token=token, crash_log=False, timeout=10)
        made.append(api)
        return api

    try:
        yield init
    finally:
        for api in made:
            api._session.requests.close()
        FacebookAdsApi.set_default_api(saved)


@pytest.fixture
def api(sdk_init: Callable[[str], FacebookAdsApi]) -> FacebookAdsApi:
    return sdk_init(TOKEN)


async def sdk_campaign(name: str = "sdk campaign") -> Campaign:
    campaign: Campaign = await asyncio.to_thread(
        AdAccount(ACCOUNT).create_campaign, params=campaign_params(name)
    )
    return campaign


async def sdk_adset(campaign_id: str, name: str = "sdk adset") -> AdSet:
    adset: AdSet = await asyncio.to_thread(
        AdAccount(ACCOUNT).create_ad_set, params=adset_params(campaign_id, name)
    )
    return adset


async def sdk_ad_chain() -> dict[str, str]:
    """Campaign, ad set, creative and ad, all through the Python SDK; their ids."""
    account = AdAccount(ACCOUNT)
    campaign = await sdk_campaign()
    adset = await sdk_adset(campaign["id"])
    creative = await asyncio.to_thread(
        account.create_ad_creative, params={"name": "sdk creative", "object_story_spec": STORY}
    )
    ad = await asyncio.to_thread(
        account.create_ad, params=ad_params(adset["id"], creative["id"], "sdk ad")
    )
    return {
        "campaign": campaign["id"],
        "adset": adset["id"],
        "creative": creative["id"],
        "ad": ad["id"],
    }


# --- Python SDK: creates -------------------------------------------------------------------


async def test_python_sdk_creates_a_campaign(graph_sim: SimHandle, api: FacebookAdsApi) -> None:
    """AdAccount.create_campaign stores a campaign with the given name and status."""
    campaign = await sdk_campaign("first")

    [stored] = await graph_sim.objects(type="campaign")
    assert stored["id"] == campaign["id"]
    assert stored["name"] == "first"
    assert stored["status"] == "PAUSED"
    assert stored["account_id"] == ACCOUNT
    [entry] = (await graph_sim.requests(log=1))["log"]
    assert (entry["method"], entry["path"], entry["status"]) == (
        "POST",
        "act_1001/campaigns",
        200,
    )


async def test_python_sdk_creates_an_adset_with_a_json_encoded_targeting(
    graph_sim: SimHandle, api: FacebookAdsApi
) -> None:
    """The SDK JSON-encodes the targeting dict; reading it back gives the same object."""
    campaign = await sdk_campaign()
    adset = await sdk_adset(campaign["id"])

    [stored] = await graph_sim.objects(type="adset")
    assert stored["id"] == adset["id"]
    assert stored["campaign_id"] == campaign["id"]
    read = await asyncio.to_thread(
        AdSet(adset["id"]).api_get,
        fields=["name", "targeting", "daily_budget", "campaign_id", "billing_event"],
    )
    assert read["targeting"].export_all_data() == TARGETING
    assert read["daily_budget"] == "1000"
    assert read["campaign_id"] == campaign["id"]
    assert read["billing_event"] == "IMPRESSIONS"


async def test_python_sdk_creates_a_creative_and_an_ad(
    graph_sim: SimHandle, api: FacebookAdsApi
) -> None:
    """A creative with an object_story_spec and an ad that references it by creative_id."""
    ids = await sdk_ad_chain()

    [ad] = await graph_sim.objects(type="ad")
    assert ad["id"] == ids["ad"]
    assert (ad["adset_id"], ad["campaign_id"]) == (ids["adset"], ids["campaign"])
    [creative] = await graph_sim.objects(type="adcreative")
    assert creative["id"] == ids["creative"]
    read_ad = await asyncio.to_thread(
        Ad(ids["ad"]).api_get, fields=["creative", "adset_id", "effective_status"]
    )
    assert read_ad["creative"]["id"] == ids["creative"]
    assert read_ad["adset_id"] == ids["adset"]
    assert read_ad["effective_status"] == "PAUSED"
    read_creative = await asyncio.to_thread(
        AdCreative(ids["creative"]).api_get, fields=["name", "object_story_spec"]
    )
    assert read_creative["object_story_spec"].export_all_data() == STORY


# --- Python SDK: batch ---------------------------------------------------------------------


async def test_python_sdk_batch_of_adset_creates(graph_sim: SimHandle, api: FacebookAdsApi) -> None:
    """new_batch + create_ad_set(batch=...) + execute: each callback fires, all are stored."""
    campaign = await sdk_campaign()
    ok: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []

    def run() -> Any:
        batch = api.new_batch()
        account = AdAccount(ACCOUNT)
        for i in range(5):
            account.create_ad_set(
                params=adset_params(campaign["id"], f"batch adset {i}"),
                batch=batch,
                success=lambda r: ok.append(r.json()),
                failure=lambda r: failed.append(r.json()),
            )
        account.create_ad_set(
            params=adset_params("999", "orphan"),
            batch=batch,
            success=lambda r: ok.append(r.json()),
            failure=lambda r: failed.append(r.json()),
        )
        return batch.execute()

    retry = await asyncio.to_thread(run)

    assert retry is None
    assert len(ok) == 5
    assert len(failed) == 1
    assert failed[0]["error"]["code"] == 100
    stored = await graph_sim.objects(type="adset", campaign_id=campaign["id"])
    assert {o["id"] for o in stored} == {r["id"] for r in ok}
    assert sorted(o["name"] for o in stored) == [f"batch adset {i}" for i in range(5)]
    counters = await graph_sim.requests(log=10)
    assert counters["operations"]["batch"] == 1
    assert counters["committed"]["create:adset"] == 5
    assert sum(1 for e in counters["log"] if e["in_batch"]) == 6


async def test_python_sdk_batch_returns_the_null_entries_as_a_retry_batch(
    graph_sim: SimHandle, api: FacebookAdsApi
) -> None:
    """A `null` entry comes back from execute() as a new batch; running it creates the rest."""
    campaign = await sdk_campaign()
    await graph_sim.add_fault(kind="batch_null", op="create:adset", after=1, times=2)
    ok: list[FacebookResponse] = []

    def first() -> Any:
        batch = api.new_batch()
        for i in range(4):
            AdAccount(ACCOUNT).create_ad_set(
                params=adset_params(campaign["id"], f"a{i}"), batch=batch, success=ok.append
            )
        return batch.execute()

    retry = await asyncio.to_thread(first)

    assert retry is not None
    assert len(ok) == 2
    assert len(await graph_sim.objects(type="adset")) == 2
    assert await asyncio.to_thread(retry.execute) is None
    assert len(ok) == 4
    names = sorted(o["name"] for o in await graph_sim.objects(type="adset"))
    assert names == ["a0", "a1", "a2", "a3"]


# --- Python SDK: reads, lists, deletes -----------------------------------------------------


async def test_python_sdk_api_get_reads_the_requested_fields(
    graph_sim: SimHandle, api: FacebookAdsApi
) -> None:
    """Campaign.api_get(fields=...) (a GET with a trailing slash) returns those fields."""
    campaign = await sdk_campaign("readable")

    read = await asyncio.to_thread(
        Campaign(campaign["id"]).api_get, fields=["name", "status", "objective"]
    )

    assert read["id"] == campaign["id"]
    assert read["name"] == "readable"
    assert read["status"] == "PAUSED"
    assert read["objective"] == "OUTCOME_TRAFFIC"
    [entry] = [e for e in (await graph_sim.requests(log=5))["log"] if e["method"] == "GET"]
    assert entry["op"] == "read:campaign"
    assert entry["path"] == campaign["id"]
    assert entry["status"] == 200


async def test_python_sdk_cursor_pages_through_every_campaign(
    graph_sim: SimHandle, api: FacebookAdsApi
) -> None:
    """get_campaigns with limit=10 over 27 campaigns: the Cursor follows `after` to the end."""
    created = [(await sdk_campaign(f"c{i:02}"))["id"] for i in range(27)]

    def list_all() -> tuple[list[str], int]:
        cursor = AdAccount(ACCOUNT).get_campaigns(fields=["name"], params={"limit": 10})
        ids = [c["id"] for c in cursor]
        return ids, cursor.total()

    listed, total = await asyncio.to_thread(list_all)

    assert len(listed) == 27
    assert set(listed) == set(created)
    assert listed == list(reversed(created)), "newest first"
    assert total == 27
    assert (await graph_sim.requests())["operations"]["list:campaign"] == 3
    assert {o["id"] for o in await graph_sim.objects(type="campaign", live=True)} == set(created)


async def test_python_sdk_api_delete_deletes_the_campaign_and_its_children(
    graph_sim: SimHandle, api: FacebookAdsApi
) -> None:
    """api_delete() (DELETE with a trailing slash) marks the tree DELETED in ground truth."""
    ids = await sdk_ad_chain()

    await asyncio.to_thread(Campaign(ids["campaign"]).api_delete)

    [entry] = [e for e in (await graph_sim.requests(log=10))["log"] if e["method"] == "DELETE"]
    assert (entry["path"], entry["status"], entry["committed"]) == (ids["campaign"], 200, True)
    by_id = {o["id"]: o["status"] for o in await graph_sim.objects()}
    assert by_id[ids["campaign"]] == "DELETED"
    assert by_id[ids["adset"]] == "DELETED"
    assert by_id[ids["ad"]] == "DELETED"
    assert await graph_sim.objects(type="campaign", live=True) == []


# --- Python SDK: errors --------------------------------------------------------------------


async def test_python_sdk_expired_token_raises_190_463(
    graph_sim: SimHandle, sdk_init: Callable[[str], FacebookAdsApi]
) -> None:
    """An expired token surfaces as FacebookRequestError 190/463, not transient."""
    sdk_init("sim-token-expired")

    with pytest.raises(FacebookRequestError) as caught:
        await sdk_campaign()

    err = caught.value
    assert err.http_status() == 400
    assert err.api_error_code() == 190
    assert err.api_error_subcode() == 463
    assert err.api_transient_error() is False
    assert err.api_error_type() == "OAuthException"
    assert await graph_sim.objects() == []


async def test_python_sdk_service_unavailable_fault_is_transient_code_2(
    graph_sim: SimHandle, api: FacebookAdsApi
) -> None:
    """Preset service_unavailable surfaces as code 2, no subcode, api_transient_error() true."""
    await graph_sim.add_fault(kind="error", preset="service_unavailable", op="create")

    with pytest.raises(FacebookRequestError) as caught:
        await sdk_campaign()

    err = caught.value
    assert err.http_status() == 500
    assert err.api_error_code() == 2
    assert err.api_error_subcode() is None
    assert err.api_transient_error() is True
    assert await graph_sim.objects() == []


# --- Node SDK request shapes ---------------------------------------------------------------


class NodeShapes:
    """Requests as facebook-nodejs-business-sdk 24.0.1 sends them (Part B §2)."""

    version = "v24.0"

    def __init__(self, graph: Graph, token: str) -> None:
        self.graph = graph
        self.token = token

    def url(self, path: str, query: str = "") -> str:
        tail = f"access_token={quote(self.token)}"
        return f"{self.graph.base}/{self.version}/{path}?{query + '&' if query else ''}{tail}"

    async def send(self, method: str, url: str, body: dict[str, Any]) -> tuple[int, Any]:
        """The token is already in *url*, last, as the Node SDK puts it."""
        reply = await self.graph(
            method, url, token=None, data=json.dumps(body), headers=NODE_HEADERS
        )
        return reply.status, reply.body

    async def create(self, account: str, edge: str, params: dict[str, Any]) -> str:
        status, body = await self.send(
            "POST", self.url(f"{account}/{edge}"), {**params, "id": account}
        )
        assert status == 200, body
        new_id: str = body["id"]
        return new_id

    async def read(self, object_id: str, fields: list[str]) -> tuple[int, Any]:
        query = "fields=" + quote(",".join(fields), safe="")
        return await self.send("GET", self.url(object_id, query), {})

    async def delete(self, object_id: str) -> tuple[int, Any]:
        return await self.send("DELETE", self.url(object_id, f"id={object_id}"), {})

    async def batch(self, ops: list[dict[str, Any]]) -> tuple[int, Any]:
        url = f"{self.graph.base}/{self.version}?access_token={quote(self.token)}"
        return await self.send("POST", url, {"batch": ops})


@pytest.fixture
def node(graph: Graph) -> NodeShapes:
    return NodeShapes(graph, TOKEN)


async def node_ad_chain(node: NodeShapes) -> dict[str, str]:
    campaign = await node.create(ACCOUNT, "campaigns", campaign_params("sdk campaign"))
    adset = await node.create(ACCOUNT, "adsets", adset_params(campaign, "sdk adset"))
    creative = await node.create(
        ACCOUNT, "adcreatives", {"name": "sdk creative", "object_story_spec": STORY}
    )
    ad = await node.create(ACCOUNT, "ads", ad_params(adset, creative, "sdk ad"))
    return {"campaign": campaign, "adset": adset, "creative": creative, "ad": ad}


async def test_node_shaped_creates_with_json_bodies_are_stored(
    graph_sim: SimHandle, node: NodeShapes
) -> None:
    """JSON bodies carrying `"id": "act_…"`, native targeting and numbers create the chain."""
    ids = await node_ad_chain(node)

    by_id = {o["id"]: o for o in await graph_sim.objects()}
    assert set(by_id) == set(ids.values())
    assert by_id[ids["adset"]]["campaign_id"] == ids["campaign"]
    assert by_id[ids["ad"]]["adset_id"] == ids["adset"]
    assert by_id[ids["campaign"]]["status"] == "PAUSED"
    status, adset = await node.read(ids["adset"], ["targeting", "daily_budget"])
    assert status == 200
    assert adset["targeting"] == TARGETING
    assert adset["daily_budget"] == "1000"


async def test_node_shaped_get_with_an_empty_json_body_reads_the_object(
    graph_sim: SimHandle, node: NodeShapes
) -> None:
    """GET /v24.0/<id>?fields=…&access_token=… with body `{}` answers the fields."""
    campaign = await node.create(ACCOUNT, "campaigns", campaign_params("node read"))

    status, body = await node.read(campaign, ["name", "status"])

    assert status == 200
    assert body == {"name": "node read", "status": "PAUSED", "id": campaign}


async def test_node_shaped_delete_with_id_in_the_query_deletes(
    graph_sim: SimHandle, node: NodeShapes
) -> None:
    """DELETE /v24.0/<id>?id=<id>&access_token=… with body `{}` deletes the object."""
    ids = await node_ad_chain(node)

    status, body = await node.delete(ids["ad"])

    assert (status, body) == (200, {"success": True})
    by_id = {o["id"]: o["status"] for o in await graph_sim.objects()}
    assert by_id[ids["ad"]] == "DELETED"
    assert by_id[ids["adset"]] == "PAUSED"


async def test_node_shaped_batch_with_unencoded_op_bodies(
    graph_sim: SimHandle, node: NodeShapes
) -> None:
    """A JSON `batch` array whose op bodies are not URL-encoded, with `name`/`attachedFiles`."""
    campaign = await node.create(ACCOUNT, "campaigns", campaign_params("sdk campaign"))
    ops = []
    for i in range(3):
        params = adset_params(campaign, f"node batch adset {i}")
        ops.append(
            {
                "method": "POST",
                "relative_url": f"{ACCOUNT}/adsets",
                "body": node_op_body(params),
                "name": params["name"],
                "attachedFiles": "",
            }
        )

    status, entries = await node.batch(ops)

    assert status == 200
    assert [e["code"] for e in entries] == [200, 200, 200]
    created = [json.loads(e["body"])["id"] for e in entries]
    stored = await graph_sim.objects(type="adset", campaign_id=campaign)
    assert {o["id"] for o in stored} == set(created)
    assert sorted(o["name"] for o in stored) == [f"node batch adset {i}" for i in range(3)]
    status, adset = await node.read(created[0], ["targeting", "daily_budget"])
    assert adset["targeting"] == TARGETING
    assert adset["daily_budget"] == "1000"


async def test_node_and_python_shapes_give_the_same_objects(
    graph_sim: SimHandle, api: FacebookAdsApi, node: NodeShapes
) -> None:
    """The same chain created the Python way and the Node way reads back identically."""
    python_ids = await sdk_ad_chain()
    node_ids = await node_ad_chain(node)
    fields = {
        "campaign": ["name", "status", "objective", "special_ad_categories", "effective_status"],
        "adset": [
            "name",
            "status",
            "targeting",
            "daily_budget",
            "billing_event",
            "optimization_goal",
            "bid_strategy",
        ],
        "creative": ["name", "object_story_spec"],
        "ad": ["name", "status", "effective_status"],
    }

    for kind, names in fields.items():
        _, from_python = await node.read(python_ids[kind], names)
        _, from_node = await node.read(node_ids[kind], names)
        from_python.pop("id")
        from_node.pop("id")
        assert from_python == from_node, kind

    truth = {o["id"]: o for o in await graph_sim.objects()}
    for kind in ("campaign", "adset", "ad"):
        python_row, node_row = truth[python_ids[kind]], truth[node_ids[kind]]
        assert python_row["status"] == node_row["status"]
        assert python_row["type"] == node_row["type"]
