"""Every create is written ahead, then settled with what Graph answered (invariants 3 and 7)."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from gateway.model import EntityQuery, EntityRecord, EntityState
from gateway.testing import GatewayHandle, SimHandle

TOKEN = "sim-token-alice"
V = "/v25.0"
TARGETING = {"geo_locations": {"countries": ["US"]}, "age_min": 18}


async def rows(gw: GatewayHandle) -> list[EntityRecord]:
    page = await gw.gateway.ledger.entities(EntityQuery(limit=1000))
    return sorted(page.items, key=lambda r: r.id)


async def post(
    http: aiohttp.ClientSession,
    gw: GatewayHandle,
    path: str,
    *,
    data: Any = None,
    json_body: Any = None,
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    async with http.post(
        f"{gw.url}{V}/{path}", params={"access_token": TOKEN}, data=data, json=json_body
    ) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None), resp.headers


async def campaign(http: aiohttp.ClientSession, gw: GatewayHandle, name: str = "C") -> str:
    status, body, _ = await post(
        http,
        gw,
        "act_1001/campaigns",
        data={"name": name, "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
    )
    assert status == 200, body
    return str(body["id"])


async def adset_form(http: aiohttp.ClientSession, gw: GatewayHandle, cid: str, name: str) -> str:
    status, body, _ = await post(
        http,
        gw,
        "act_1001/adsets",
        data={
            "name": name,
            "campaign_id": cid,
            "billing_event": "IMPRESSIONS",
            "targeting": json.dumps(TARGETING, sort_keys=True),
        },
    )
    assert status == 200, body
    return str(body["id"])


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


class TestCreates:
    async def test_python_sdk_shaped_creates_are_ledgered_with_their_ids(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Campaign, ad set, creative and ad: one `created` row each, with parent and name."""
        cid = await campaign(http, gateway, "Spring")
        sid = await adset_form(http, gateway, cid, "Set 1")
        _, creative, _ = await post(http, gateway, "act_1001/adcreatives", data={"name": "Cr"})
        _, ad, _ = await post(
            http,
            gateway,
            "act_1001/ads",
            data={
                "name": "Ad 1",
                "adset_id": sid,
                "creative": json.dumps({"creative_id": creative["id"]}),
            },
        )
        recorded = await rows(gateway)
        assert [(r.entity_type, r.state, r.graph_id) for r in recorded] == [
            ("campaign", EntityState.CREATED, cid),
            ("adset", EntityState.CREATED, sid),
            ("adcreative", EntityState.CREATED, creative["id"]),
            ("ad", EntityState.CREATED, ad["id"]),
        ]
        assert recorded[1].parent_id == cid
        assert recorded[1].name == "Set 1"
        assert recorded[3].parent_id == sid
        assert all(r.account_id == "act_1001" and r.source.value == "single" for r in recorded)
        truth = {o["id"] for o in await graph_sim.objects()}
        assert {r.graph_id for r in recorded} == truth

    async def test_node_sdk_shaped_json_creates_are_ledgered(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """JSON bodies with native objects and Node's extra "id" are recognised as creates."""
        cid = await campaign(http, gateway)
        status, body, _ = await post(
            http,
            gateway,
            "act_1001/adsets",
            json_body={
                "name": "Node set",
                "campaign_id": int(cid),
                "billing_event": "IMPRESSIONS",
                "targeting": TARGETING,
                "daily_budget": 1000,
                "id": "act_1001",
            },
        )
        assert status == 200, body
        last = (await rows(gateway))[-1]
        assert (last.entity_type, last.graph_id, last.parent_id, last.name) == (
            "adset",
            body["id"],
            cid,
            "Node set",
        )

    async def test_graph_refusals_are_recorded_as_failed_and_passed_through(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """A missing required field: Graph's 400 reaches the caller; the row is `failed`."""
        status, body, headers = await post(http, gateway, "act_1001/campaigns", data={"name": "x"})
        assert status == 400
        assert body["error"]["code"] == 100
        assert "X-Gateway-Request-Id" in headers
        (row,) = await rows(gateway)
        assert row.state is EntityState.FAILED
        assert row.error is not None
        assert row.error["code"] == 100
        assert row.request_id == headers["X-Gateway-Request-Id"]

    async def test_image_uploads_are_streamed_and_ledgered(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """A multipart upload to adimages gets a row whose id is <account>:<hash>."""
        form = aiohttp.FormData()
        form.add_field("pic.png", png(), filename="pic.png", content_type="image/png")
        status, body, _ = await post(http, gateway, "act_1001/adimages", data=form)
        assert status == 200, body
        image_hash = body["images"]["pic.png"]["hash"]
        (row,) = await rows(gateway)
        assert (row.entity_type, row.state, row.graph_id) == (
            "adimage",
            EntityState.CREATED,
            f"1001:{image_hash}",
        )


class TestBatchesAndCopies:
    async def test_each_create_in_a_batch_gets_its_own_row(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Python-encoded batch: two ad set creates and a read → two rows, op indexes 0 and 2."""
        cid = await campaign(http, gateway)
        body = f"name=B%20one&campaign_id={cid}&billing_event=IMPRESSIONS&targeting=%7B%7D"
        ops = [
            {"method": "POST", "relative_url": "act_1001/adsets", "body": body},
            {"method": "GET", "relative_url": "me"},
            {
                "method": "POST",
                "relative_url": "act_1001/adsets",
                "body": body.replace("one", "two"),
            },
        ]
        status, answer, _ = await post(http, gateway, "", data={"batch": json.dumps(ops)})
        assert status == 200
        ids = [json.loads(answer[i]["body"])["id"] for i in (0, 2)]
        batch_rows = [r for r in await rows(gateway) if r.source.value == "batch"]
        assert [(r.op_index, r.graph_id, r.name, r.parent_id) for r in batch_rows] == [
            (0, ids[0], "B one", cid),
            (2, ids[1], "B two", cid),
        ]
        assert len({r.request_id for r in batch_rows}) == 1

    async def test_node_encoded_batch_creates_are_ledgered(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle
    ) -> None:
        """JSON {"batch": [...]} with unencoded op bodies, `name` and `attachedFiles`."""
        cid = await campaign(http, gateway)
        ops = [
            {
                "method": "POST",
                "relative_url": "act_1001/adsets",
                "body": f"name=node {i}&campaign_id={cid}&billing_event=IMPRESSIONS&targeting="
                '{"geo_locations":{"countries":["US"]}}&fields=',
                "name": f"node {i}",
                "attachedFiles": "",
            }
            for i in range(3)
        ]
        status, answer, _ = await post(http, gateway, "", json_body={"batch": ops})
        assert status == 200
        assert [e["code"] for e in answer] == [200, 200, 200]
        created = [r for r in await rows(gateway) if r.source.value == "batch"]
        assert [r.name for r in created] == ["node 0", "node 1", "node 2"]
        assert all(r.state is EntityState.CREATED for r in created)

    async def test_a_deep_copy_records_every_id_it_names(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Copy of an ad set with its ad: the copy's row plus one row per child id."""
        cid = await campaign(http, gateway)
        sid = await adset_form(http, gateway, cid, "Source")
        _, creative, _ = await post(http, gateway, "act_1001/adcreatives", data={"name": "Cr"})
        await post(
            http,
            gateway,
            "act_1001/ads",
            data={
                "name": "A",
                "adset_id": sid,
                "creative": json.dumps({"creative_id": creative["id"]}),
            },
        )
        status, answer, _ = await post(http, gateway, f"{sid}/copies", data={"deep_copy": "true"})
        assert status == 200, answer
        copy_rows = [r for r in await rows(gateway) if r.source.value == "copy"]
        named = {o["copied_id"] for o in answer["ad_object_ids"]} | {answer["copied_adset_id"]}
        assert {r.graph_id for r in copy_rows} == named
        top = next(r for r in copy_rows if r.graph_id == answer["copied_adset_id"])
        assert top.entity_type == "adset"
        assert top.parent_id == sid
        assert all(r.account_id == "act_1001" for r in copy_rows)
        truth = {o["id"] for o in await graph_sim.objects()}
        assert {r.graph_id for r in await rows(gateway) if r.graph_id} <= truth


class TestUnknownOutcomes:
    """A create whose answer does not say what happened is looked up on Graph in the request
    (invariant 5): found → adopted and answered with its id; absent → sent again once."""

    async def test_commit_then_drop_is_found_by_looking_and_answered_with_its_id(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Graph created it but the answer was lost: the gateway finds it, never re-sends."""
        await graph_sim.add_fault(kind="drop_after_commit", op="create:campaign", times=1)
        status, body, headers = await post(
            http,
            gateway,
            "act_1001/campaigns",
            data={"name": "Lost", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        )
        on_graph = await graph_sim.objects(type="campaign")
        assert [o["name"] for o in on_graph] == ["Lost"]
        assert status == 200, body
        assert body == {"id": on_graph[0]["id"]}
        assert headers["X-Gateway-Attempts"] == "1"
        (row,) = await rows(gateway)
        assert (row.state, row.graph_id) == (EntityState.CREATED, on_graph[0]["id"])
        assert (await graph_sim.requests())["committed"]["create:campaign"] == 1

    async def test_a_graph_500_before_the_write_is_looked_up_then_sent_again_once(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """Code 2 may follow a write: look first; Graph shows nothing, so it goes again."""
        await graph_sim.add_fault(kind="error", op="create:campaign", times=1)
        status, body, headers = await post(
            http,
            gateway,
            "act_1001/campaigns",
            data={"name": "x", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        )
        assert status == 200, body
        assert headers["X-Gateway-Attempts"] == "2"
        on_graph = await graph_sim.objects(type="campaign")
        assert [o["id"] for o in on_graph] == [body["id"]]
        (row,) = await rows(gateway)
        assert (row.state, row.graph_id) == (EntityState.CREATED, body["id"])

    async def test_a_null_batch_entry_is_looked_up_and_the_batch_answer_is_whole(
        self, http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
    ) -> None:
        """A `null` entry may or may not have run: it is looked up (and sent again only if it
        did not); the caller gets three ids, Graph holds three ad sets."""
        cid = await campaign(http, gateway)
        await graph_sim.add_fault(kind="batch_null", op="create:adset", after=1, times=1)
        body = f"name=n&campaign_id={cid}&billing_event=IMPRESSIONS&targeting=%7B%7D"
        ops = [{"method": "POST", "relative_url": "act_1001/adsets", "body": body}] * 3
        status, answer, _ = await post(http, gateway, "", data={"batch": json.dumps(ops)})
        assert status == 200
        ids = [json.loads(entry["body"])["id"] for entry in answer]
        on_graph = sorted(o["id"] for o in await graph_sim.objects(type="adset"))
        assert sorted(ids) == on_graph
        assert len(on_graph) == 3
        states = [r.state for r in await rows(gateway) if r.source.value == "batch"]
        assert states == [EntityState.CREATED] * 3

    @pytest.mark.parametrize("kind", ["stall_after_commit"])
    async def test_no_answer_within_the_per_try_timeout_is_found_by_looking(
        self,
        http: aiohttp.ClientSession,
        graph_sim: SimHandle,
        sqlite_url: str,
        kind: str,
    ) -> None:
        """Graph committed and stalled past the timeout: found on Graph, adopted, 200."""
        from gateway.testing import running_gateway
        from tests.gateway.test_passthrough import _policy

        policy = _policy(upstream={"per_try_timeout_seconds": 0.3, "deadline_seconds": 3.0})
        await graph_sim.add_fault(kind=kind, op="create:campaign", stall_seconds=5, times=1)
        async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as gw:
            status, body, _ = await post(
                http,
                gw,
                "act_1001/campaigns",
                data={
                    "name": "Slow",
                    "objective": "OUTCOME_TRAFFIC",
                    "special_ad_categories": "[]",
                },
            )
            on_graph = await graph_sim.objects(type="campaign")
            assert status == 200, body
            assert [o["id"] for o in on_graph] == [body["id"]]
            (row,) = await rows(gw)
            assert row.state is EntityState.CREATED


class TestUploadLimits:
    async def test_an_upload_past_its_limit_is_cut_off_and_recorded_as_failed(
        self, http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
    ) -> None:
        """A chunked upload over max_upload_bytes: 413, row `failed`, no image on Graph."""
        from gateway.testing import running_gateway
        from tests.gateway.test_passthrough import _policy

        boundary = "bench-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="big.png"; '
            'filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()

        async def body() -> AsyncIterator[bytes]:
            yield head
            for _ in range(64):
                yield b"\0" * 1024
            yield f"\r\n--{boundary}--\r\n".encode()

        policy = _policy(proxy={"max_upload_bytes": 16 * 1024})
        async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as gw:
            async with http.post(
                f"{gw.url}{V}/act_1001/adimages",
                params={"access_token": TOKEN},
                data=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            ) as resp:
                answer = await resp.json()
                assert resp.status == 413
                assert answer["error"]["gateway_reason"] == "bad_request"
            (row,) = await rows(gw)
            assert row.state is EntityState.FAILED
            assert row.entity_type == "adimage"
        assert await graph_sim.objects(type="adimage") == []
