"""The admin port: health, readiness, metrics and the entities listing (DESIGN.md §3.3)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from gateway.testing import GatewayHandle, SimHandle, running_gateway

TOKEN = "sim-token-alice"
ADMIN = "admin-secret-for-tests"


async def create_campaigns(http: aiohttp.ClientSession, gw: GatewayHandle, n: int) -> list[str]:
    ids = []
    for i in range(n):
        async with http.post(
            f"{gw.url}/v25.0/act_1001/campaigns",
            params={"access_token": TOKEN},
            data={"name": f"C{i}", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        ) as resp:
            ids.append((await resp.json())["id"])
    return ids


async def test_healthz_and_readyz_report_a_reachable_ledger(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """/healthz says the process is alive; /readyz checks the ledger."""
    async with http.get(gateway.admin_url + "/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
    async with http.get(gateway.admin_url + "/readyz") as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "ready": True,
            "checks": {"ledger": "ok"},
            "breakers": {"graph": "closed"},
        }


async def test_readyz_is_503_when_the_ledger_is_gone(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """A ledger that cannot answer makes the gateway not ready."""
    await gateway.gateway.ledger.aclose()
    async with http.get(gateway.admin_url + "/readyz") as resp:
        body = await resp.json()
        assert resp.status == 503
        assert body["ready"] is False
        assert body["checks"]["ledger"].startswith("unavailable")


async def test_metrics_count_requests_upstream_latency_and_ledger_writes(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """Prometheus text with requests by kind/outcome, upstream and ledger histograms."""
    await create_campaigns(http, gateway, 2)
    async with http.get(f"{gateway.url}/v25.0/me", params={"access_token": TOKEN}) as resp:
        assert resp.status == 200
    async with http.get(gateway.admin_url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert 'gateway_requests_total{kind="create",outcome="ok"} 2.0' in text
    assert 'gateway_requests_total{kind="passthrough",outcome="ok"} 1.0' in text
    assert 'gateway_upstream_latency_seconds_count{kind="create"} 2.0' in text
    assert 'gateway_ledger_write_seconds_count{op="intents"} 2.0' in text
    assert 'gateway_entities_total{entity_type="campaign",state="created"} 2.0' in text
    assert TOKEN not in text


async def test_a_refused_create_a_copy_and_a_batch_are_counted_under_their_own_kind(
    http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
) -> None:
    """A create that ends in the gateway's own error is still a create in
    gateway_requests_total (with its reason as outcome); copies and batches have their kinds."""
    (campaign,) = await create_campaigns(http, gateway, 1)
    params = {"access_token": TOKEN}
    async with http.post(
        f"{gateway.url}/v25.0/act_1001/campaigns",
        params=params,
        data={"name": "held", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        headers={"X-Gateway-Job": "job_" + "0" * 20},
    ) as resp:
        assert resp.status == 404
    async with http.post(f"{gateway.url}/v25.0/{campaign}/copies", params=params) as resp:
        assert resp.status == 200, await resp.text()
    batch = [{"method": "GET", "relative_url": "me"}]
    async with http.post(
        f"{gateway.url}/v25.0/",
        data={"access_token": TOKEN, "batch": json.dumps(batch)},
    ) as resp:
        assert resp.status == 200
    batch = [{"method": "POST", "relative_url": "act_1001/campaigns", "body": "name=b"}]
    async with http.post(
        f"{gateway.url}/v25.0/",
        data={"access_token": TOKEN, "batch": json.dumps(batch)},
    ) as resp:
        assert resp.status == 200
    async with http.get(gateway.admin_url + "/metrics") as resp:
        text = await resp.text()
    assert 'gateway_requests_total{kind="create",outcome="job_not_found"} 1.0' in text
    assert 'gateway_requests_total{kind="copy",outcome="ok"} 1.0' in text
    assert 'gateway_requests_total{kind="batch",outcome="ok"} 1.0' in text
    # A batch with no create in it is forwarded untouched: a pass-through.
    assert 'gateway_requests_total{kind="passthrough",outcome="ok"} 1.0' in text


async def test_entities_are_listed_newest_first_with_filters_and_paging(
    http: aiohttp.ClientSession, gateway: GatewayHandle
) -> None:
    """GET /admin/v1/entities pages through every row once; account and state filter."""
    ids = await create_campaigns(http, gateway, 5)
    seen: list[str] = []
    url = gateway.admin_url + "/admin/v1/entities?limit=2&account=act_1001"
    while url:
        async with http.get(url) as resp:
            assert resp.status == 200
            page = await resp.json()
        seen.extend(row["graph_id"] for row in page["data"])
        nxt = page["paging"].get("next")
        url = gateway.admin_url + nxt if nxt else ""
    assert seen == list(reversed(ids))
    async with http.get(gateway.admin_url + "/admin/v1/entities?account=act_9") as resp:
        assert (await resp.json())["data"] == []
    async with http.get(gateway.admin_url + "/admin/v1/entities?state=failed") as resp:
        assert (await resp.json())["data"] == []
    async with http.get(
        gateway.admin_url + "/admin/v1/entities?since=2000-01-01T00:00:00Z"
    ) as resp:
        assert len((await resp.json())["data"]) == 5


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=x", "before=abc", "since=yesterday", "state=odd"]
)
async def test_bad_entity_filters_are_400_with_the_problem(
    http: aiohttp.ClientSession, gateway: GatewayHandle, query: str
) -> None:
    """Every bad filter is named; nothing is queried."""
    async with http.get(f"{gateway.admin_url}/admin/v1/entities?{query}") as resp:
        body = await resp.json()
        assert resp.status == 400
        assert body["error"]["problems"]


@pytest.mark.parametrize("listing", ["jobs", "entities", "audit"])
async def test_every_listing_pages_up_to_1000_and_refuses_more_the_same_way(
    http: aiohttp.ClientSession, gateway: GatewayHandle, listing: str
) -> None:
    """One `limit` rule for every admin listing: 1..1000, else 400 `bad_request` naming it."""
    url = f"{gateway.admin_url}/admin/v1/{listing}"
    async with http.get(url, params={"limit": "1000"}) as resp:
        assert resp.status == 200, await resp.text()
    for bad in ("1001", "0", "-1", "ten"):
        async with http.get(url, params={"limit": bad}) as resp:
            body = await resp.json()
            assert resp.status == 400
            assert body["error"]["gateway_reason"] == "bad_request"
            assert body["error"]["problems"] == ["limit: an integer from 1 to 1000"]


async def test_admin_api_needs_the_bearer_token_when_one_is_set(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    """No token → 401 with WWW-Authenticate; wrong → 403; right → 200. Health stays open."""
    async with running_gateway(
        graph_sim.url, sqlite_url, environ={"GATEWAY_ADMIN_TOKEN": ADMIN}
    ) as gw:
        url = gw.admin_url + "/admin/v1/entities"
        async with http.get(url) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(url, headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 403
        async with http.get(url, headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
            assert resp.status == 200
            assert json.loads(await resp.text())["data"] == []
        async with http.get(gw.admin_url + "/healthz") as resp:
            assert resp.status == 200
