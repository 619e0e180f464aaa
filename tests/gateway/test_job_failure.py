"""Seed scenario 4: the ad account is suspended mid-job (DESIGN.md §2.8, issue 6).

A refusal under a job makes the gateway look at the account; once Graph says it is no longer
active the job is `failed`: nothing is retried, no more creates go out, what was made is kept
and listed, and the report offers rollback (an explicit admin decision).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import aiohttp

from gateway.testing import SimHandle, running_gateway
from tests.gateway.test_jobs import ALICE, adset_params, campaign_params, create, job, progress


async def test_an_account_suspended_after_30_ad_sets_fails_the_job_and_keeps_what_was_made(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    async with running_gateway(graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}") as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 50})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        await graph_sim.add_fault(kind="suspend_account", op="create:adset", after=30, times=1)
        made = [
            await create(http, gw, "adsets", adset_params(cid), job_id=job_id) for _ in range(30)
        ]
        assert Counter(a.status for a in made) == {200: 30}
        before = (await graph_sim.requests())["operations"].get("create:adset", 0)

        refused = await create(http, gw, "adsets", adset_params(cid), job_id=job_id)

        assert refused.status == 403, refused.body  # Graph's refusal, passed on
        assert refused.headers["X-Gateway-Attempts"] == "1"  # never retried
        assert (await graph_sim.requests())["operations"]["create:adset"] == before + 1
        report = await progress(http, gw, job_id)
        assert report.body["status"] == "failed"
        assert report.body["slots"]["adset"]["created"] == 30
        assert report.body["slots"]["adset"]["in_flight"] == 0
        assert report.body["rollback"]["available"] is True
        assert report.body["rollback"]["entities"] == 31  # the campaign and 30 ad sets

        # Declined (no rollback asked for): the partial state is kept; no more creates go out.
        later = await create(http, gw, "adsets", adset_params(cid), job_id=job_id)
        later.refused(409, "job_closed")
        assert (await graph_sim.requests())["operations"]["create:adset"] == before + 1
        assert len(await graph_sim.objects(type="adset", live=True)) == 30
        metrics = await (await http.get(gw.admin_url + "/metrics")).text()
        assert 'gateway_jobs_failed_total{why="account_not_active"} 1.0' in metrics


async def test_a_refusal_of_one_create_on_an_active_account_leaves_the_job_open(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """A permission-family refusal while the account is still ACTIVE is that create's own."""
    async with running_gateway(graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}") as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 2})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        await graph_sim.add_fault(
            kind="error", op="create:adset", times=1, status=403, code=200, is_transient=False
        )
        refused = await create(http, gw, "adsets", adset_params(cid), job_id=job_id)
        assert refused.status == 403
        report = await progress(http, gw, job_id)
        assert report.body["status"] == "in_progress"
        assert "rollback" not in report.body
        again = await create(http, gw, "adsets", adset_params(cid), job_id=job_id)
        assert again.status == 200, again.body


async def test_after_the_failure_a_confirmed_rollback_deletes_everything_the_job_made(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """The other branch: the operator confirms the rollback. While the account is still
    suspended Graph refuses the deletes — reported, the job partially rolled back; once the
    account is reinstated the same rollback, executed again, deletes the rest."""
    environ = {"GATEWAY_ADMIN_TOKEN": "t"}
    auth = {"Authorization": "Bearer t"}
    async with running_gateway(
        graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}", environ=environ
    ) as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 50})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        await graph_sim.add_fault(kind="suspend_account", op="create:adset", after=30, times=1)
        for _ in range(31):
            await create(http, gw, "adsets", adset_params(cid), job_id=job_id)
        assert (await progress(http, gw, job_id)).body["status"] == "failed"
        url = f"{gw.admin_url}/admin/v1/jobs/{job_id}/rollback"
        async with http.post(url, json={"dry_run": True}, headers=auth) as resp:
            plan = await resp.json()
        assert plan["count"] == 31
        execute = {"dry_run": False, "reason": "account suspended mid-job", "access_token": ALICE}

        async with http.post(url, json=execute, headers=auth) as resp:
            first = await resp.json()
        assert first["job_status"] == "partially_rolled_back", first
        assert len(await graph_sim.objects(type="adset", live=True)) == 30  # refused, reported

        await graph_sim.put_account(id="act_1001", account_status=1, disable_reason=0)
        async with http.post(url, json=execute, headers=auth) as resp:
            second = await resp.json()
        assert second["job_status"] == "rolled_back", second
        assert await graph_sim.objects(type="adset", live=True) == []
        assert await graph_sim.objects(type="campaign", live=True) == []
