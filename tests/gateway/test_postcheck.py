"""Post-creation verification against the simulator's ground truth (issue 6, item 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from gateway.postcheck import verify_job
from gateway.testing import SimHandle, running_gateway
from tests.gateway.test_jobs import ALICE, adset_params, campaign_params, create, job

V = "/v25.0"


async def _direct(
    http: aiohttp.ClientSession, sim: SimHandle, method: str, path: str, **data: str
) -> dict[str, Any]:
    async with http.request(
        method, f"{sim.url}{V}/{path}", params={"access_token": ALICE}, data=data or None
    ) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return body


async def test_one_deleted_and_one_made_directly_are_one_missing_and_one_untracked(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    async with running_gateway(graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}") as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 3})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        ids = [
            (await create(http, gw, "adsets", adset_params(cid, f"s{n}"), job_id=job_id)).body["id"]
            for n in range(3)
        ]
        record = await gw.gateway.jobs.job(job_id)
        assert record is not None
        clean = await verify_job(gw.gateway, record, ALICE)
        assert clean.clean
        assert clean.checked == 4

        await _direct(http, graph_sim, "DELETE", ids[1])
        made = await _direct(
            http, graph_sim, "POST", "act_1001/adsets", **adset_params(cid, "outside")
        )

        report = await verify_job(gw.gateway, record, ALICE)

        assert [(f.graph_id, f.entity_type, f.slot_no) for f in report.missing] == [
            (ids[1], "adset", 2)
        ]
        assert [f.graph_id for f in report.untracked] == [made["id"]]
        assert report.mismatched == ()
        metrics = await (await http.get(gw.admin_url + "/metrics")).text()
        assert 'gateway_verification_discrepancies_total{kind="missing"} 1.0' in metrics
