"""No create reaches Graph unless its intent is on record; reads go on (invariant 3)."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
import pytest

from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.gateway.relay import relay_to

TOKEN = "sim-token-alice"
CAMPAIGN = {"name": "C", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"}


async def _check_fail_closed(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    before = (await graph_sim.requests())["operations"]
    async with http.post(
        f"{gw.url}/v25.0/act_1001/campaigns", params={"access_token": TOKEN}, data=CAMPAIGN
    ) as resp:
        body = await resp.json()
        assert resp.status == 503
        assert body["error"]["gateway_reason"] == "ledger_unavailable"
        assert body["error"]["is_transient"] is True
        assert "Retry-After" in resp.headers
    after = (await graph_sim.requests())["operations"]
    assert after.get("create:campaign", 0) == before.get("create:campaign", 0)
    assert await graph_sim.objects(type="campaign") == []
    async with http.get(f"{gw.url}/v25.0/act_1001", params={"access_token": TOKEN}) as resp:
        assert resp.status == 200


async def test_creates_fail_closed_when_the_sqlite_ledger_is_gone(
    http: aiohttp.ClientSession, gateway: GatewayHandle, graph_sim: SimHandle
) -> None:
    """A closed ledger: 503 ledger_unavailable, Graph never sees the create, reads pass."""
    await gateway.gateway.ledger.aclose()
    await _check_fail_closed(http, gateway, graph_sim)


@pytest.mark.postgres
async def test_creates_fail_closed_when_postgresql_becomes_unreachable(
    http: aiohttp.ClientSession, graph_sim: SimHandle, postgres_dsn: str
) -> None:
    """PostgreSQL cut off mid-run (connections reset): creates get 503, reads pass."""
    target = urlsplit(postgres_dsn)
    async with relay_to(target.hostname or "127.0.0.1", target.port or 5432) as relay:
        dsn = postgres_dsn.replace(
            target.netloc, f"{target.username or 'postgres'}@127.0.0.1:{relay.port}"
        )
        async with running_gateway(graph_sim.url, dsn) as gw:
            async with http.post(
                f"{gw.url}/v25.0/act_1001/campaigns", params={"access_token": TOKEN}, data=CAMPAIGN
            ) as resp:
                assert resp.status == 200
            await graph_sim.reset()
            await relay.cut()
            await _check_fail_closed(http, gw, graph_sim)
