"""Zero-change mode: creates without a job still get per-campaign caps from the policy."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import aiohttp

from gateway.app import load_policy
from gateway.testing import SimHandle, running_gateway

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
