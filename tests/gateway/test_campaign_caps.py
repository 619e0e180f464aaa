"""Zero-change mode: creates without a job still get per-campaign caps from the policy."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from dataclasses import replace

import aiohttp
import pytest

from gateway.app import load_policy
from gateway.testing import SimHandle, running_gateway
from tests.pgschema import scratch_schema

TOKEN = "sim-token-alice"


async def test_ad_sets_past_the_campaign_cap_are_refused_and_never_sent(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    """adsets_per_campaign = 5: of 12 concurrent ad set creates exactly 5 reach Graph."""
    base = load_policy(None)
    policy = replace(base, caps=replace(base.caps, adsets_per_campaign=5))
    async with running_gateway(graph_sim.url, sqlite_url, policy=policy) as gw:
        url = f"{gw.url}/v25.0/act_1001"
        async with http.post(
            f"{url}/campaigns",
            params={"access_token": TOKEN},
            data={"name": "C", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        ) as resp:
            campaign = (await resp.json())["id"]

        async def adset(n: int) -> tuple[int, dict[str, object]]:
            data = {
                "name": f"S{n}",
                "campaign_id": campaign,
                "billing_event": "IMPRESSIONS",
                "targeting": json.dumps({"geo_locations": {"countries": ["US"]}}),
            }
            async with http.post(f"{url}/adsets", params={"access_token": TOKEN}, data=data) as r:
                return r.status, await r.json()

        answers = await asyncio.gather(*(adset(n) for n in range(12)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 5 + [409] * 7
    refused = [body for status, body in answers if status == 409]
    assert all(b["error"]["gateway_reason"] == "cap_exceeded" for b in refused)  # type: ignore[index]
    assert len(await graph_sim.objects(type="adset")) == 5
    assert (await graph_sim.requests())["operations"]["create:adset"] == 5


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_replicas_on_one_ledger_and_redis_never_pass_the_campaign_cap_together(
    http: aiohttp.ClientSession, graph_sim: SimHandle, postgres_dsn: str, clean_redis: str
) -> None:
    """adsets_per_campaign = 5 on two gateways sharing one PostgreSQL ledger and one Redis:
    of 3 rounds of 20 concurrent ad set creates spread over both, exactly 5 reach Graph (the
    count and the intent it allows are one step across replicas, under a Redis lease)."""
    base = load_policy(None)
    policy = replace(base, caps=replace(base.caps, adsets_per_campaign=5))
    env = {"GATEWAY_REDIS_URL": clean_redis}
    async with AsyncExitStack() as stack:
        dsn = await stack.enter_async_context(scratch_schema(postgres_dsn))
        gateways = [
            await stack.enter_async_context(
                running_gateway(graph_sim.url, dsn, policy=policy, environ=env)
            )
            for _ in range(2)
        ]
        for round_no in range(3):
            url = f"{gateways[0].url}/v25.0/act_1001"
            async with http.post(
                f"{url}/campaigns",
                params={"access_token": TOKEN},
                data={
                    "name": f"C{round_no}",
                    "objective": "OUTCOME_TRAFFIC",
                    "special_ad_categories": "[]",
                },
            ) as resp:
                campaign = (await resp.json())["id"]

            async def adset(n: int, campaign: str = campaign) -> int:
                data = {
                    "name": f"S{n}",
                    "campaign_id": campaign,
                    "billing_event": "IMPRESSIONS",
                    "targeting": json.dumps({"geo_locations": {"countries": ["US"]}}),
                }
                gw = gateways[n % 2]
                async with http.post(
                    f"{gw.url}/v25.0/act_1001/adsets", params={"access_token": TOKEN}, data=data
                ) as r:
                    return r.status

            statuses = sorted(await asyncio.gather(*(adset(n) for n in range(20))))
            assert statuses == [200] * 5 + [409] * 15, round_no
            assert len(await graph_sim.objects(type="adset", campaign_id=campaign)) == 5
