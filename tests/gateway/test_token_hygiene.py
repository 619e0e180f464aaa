"""Access tokens never reach a log line, a metric or the database (in clear)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import aiohttp

from gateway import logs
from gateway.testing import GatewayHandle, SimHandle, running_gateway

SECRET = "EAAsecretTOKEN0123456789abcdefSECRET"


async def test_a_token_appears_in_no_log_metric_or_database_file(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """Query, form, JSON and Authorization tokens; creates, batches, errors: grep finds none."""
    await graph_sim.put_token(token=SECRET, user_id="777")
    stream = io.StringIO()
    logs.configure("json", stream=stream, level=logging.DEBUG)
    db = tmp_path / "ledger.db"
    try:
        async with running_gateway(graph_sim.url, f"sqlite:///{db}") as gw:
            await _traffic(http, gw)
            async with http.get(gw.admin_url + "/metrics") as resp:
                metrics = await resp.text()
            async with http.get(gw.admin_url + "/admin/v1/entities") as resp:
                listing = await resp.text()
    finally:
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().splitlines()
    assert any(json.loads(line).get("event") == "request" for line in lines)
    assert SECRET not in stream.getvalue()
    assert SECRET not in metrics
    assert SECRET not in listing
    for file in tmp_path.iterdir():
        assert SECRET.encode() not in file.read_bytes(), file.name


async def _traffic(http: aiohttp.ClientSession, gw: GatewayHandle) -> None:
    base = f"{gw.url}/v25.0"
    campaign = {"name": "C", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"}
    async with http.post(
        f"{base}/act_1001/campaigns", params={"access_token": SECRET}, data=campaign
    ) as r:
        cid = (await r.json())["id"]
    async with http.post(
        f"{base}/act_1001/campaigns", data={**campaign, "access_token": SECRET}
    ) as r:
        assert r.status == 200
    async with http.post(
        f"{base}/act_1001/campaigns", json={**campaign, "access_token": SECRET}
    ) as r:
        assert r.status == 200
    auth = {"Authorization": f"Bearer {SECRET}"}
    async with http.post(f"{base}/act_1001/campaigns", data=campaign, headers=auth) as r:
        assert r.status == 200
    async with http.post(f"{base}/act_1001/campaigns", data={"name": "bad"}, headers=auth) as r:
        assert r.status == 400
    ops = [
        {"method": "POST", "relative_url": "act_1001/adsets", "body": f"name=s&campaign_id={cid}"}
    ]
    async with http.post(f"{base}/", data={"batch": json.dumps(ops), "access_token": SECRET}) as r:
        assert r.status == 200
    async with http.get(f"{base}/me", params={"access_token": SECRET}) as r:
        assert r.status == 200
    async with http.get(f"{base}/nope", params={"access_token": SECRET}) as r:
        assert r.status == 400
