"""Post-creation verification against the simulator's ground truth (issue 6, item 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from gateway.postcheck import verify_completed, verify_job
from gateway.repair import repair_job
from gateway.testing import SimHandle, running_gateway
from tests.gateway.test_jobs import (
    ALICE,
    adset_params,
    campaign_params,
    create,
    job,
    policy_with,
    progress,
)

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


async def test_repair_frees_the_missing_slot_and_adopts_the_untracked_one_into_it(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """1 missing + 1 untracked → the job holds exactly 3 ad sets again, all live on Graph,
    all on record; a second verification is clean; nothing was created by the repair."""
    async with running_gateway(graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}") as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 3})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        ids = [
            (await create(http, gw, "adsets", adset_params(cid, f"s{n}"), job_id=job_id)).body["id"]
            for n in range(3)
        ]
        await _direct(http, graph_sim, "DELETE", ids[0])
        made = await _direct(
            http, graph_sim, "POST", "act_1001/adsets", **adset_params(cid, "outside")
        )
        record = await gw.gateway.jobs.job(job_id)
        assert record is not None
        creates = (await graph_sim.requests())["committed"]["create:adset"]

        result = await repair_job(gw.gateway, record, await verify_job(gw.gateway, record, ALICE))

        assert result["freed"] == [{"graph_id": ids[0], "entity_type": "adset", "slot_no": 1}]
        assert result["adopted"] == [{"graph_id": made["id"], "entity_type": "adset", "slot_no": 1}]
        live = {o["id"] for o in await graph_sim.objects(type="adset", live=True)}
        slots = await gw.gateway.jobs.slots(job_id)
        assert {s.graph_id for s in slots if s.entity_type == "adset"} == live
        assert len(live) == 3
        assert (await gw.gateway.jobs.job(job_id)).status.value == "completed"  # type: ignore[union-attr]
        assert await gw.gateway.ledger.find_by_graph_id(made["id"]) is not None
        assert (await graph_sim.requests())["committed"]["create:adset"] == creates
        assert (await verify_job(gw.gateway, record, ALICE)).clean


async def test_an_untracked_entity_past_the_cap_is_reported_not_adopted(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    async with running_gateway(graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}") as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 1})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        mine = await create(http, gw, "adsets", adset_params(cid), job_id=job_id)
        made = await _direct(
            http, graph_sim, "POST", "act_1001/adsets", **adset_params(cid, "outside")
        )
        record = await gw.gateway.jobs.job(job_id)
        assert record is not None
        result = await repair_job(gw.gateway, record, await verify_job(gw.gateway, record, ALICE))
        assert result["adopted"] == []
        assert [e["graph_id"] for e in result["not_adopted"]] == [made["id"]]
        slots = await gw.gateway.jobs.slots(job_id)
        assert [s.graph_id for s in slots if s.entity_type == "adset"] == [mine.body["id"]]


ADMIN = "admin-secret"


async def _admin(
    http: aiohttp.ClientSession, gw: Any, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(
        method,
        f"{gw.admin_url}/admin/v1/{path}",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN}"},
    ) as resp:
        return resp.status, await resp.json()


async def test_the_admin_api_verifies_repairs_and_keeps_both_in_the_audit_trail(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    environ = {"GATEWAY_ADMIN_TOKEN": ADMIN}
    async with running_gateway(
        graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}", environ=environ
    ) as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 2})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        ids = [
            (await create(http, gw, "adsets", adset_params(cid, f"s{n}"), job_id=job_id)).body["id"]
            for n in range(2)
        ]
        await _direct(http, graph_sim, "DELETE", ids[1])
        made = await _direct(
            http, graph_sim, "POST", "act_1001/adsets", **adset_params(cid, "outside")
        )

        status, verified = await _admin(http, gw, "POST", f"jobs/{job_id}/verify", {})
        assert status == 200, verified
        counts = verified["verification"]["counts"]
        assert counts == {"missing": 1, "untracked": 1, "mismatched": 0}

        status, repaired = await _admin(http, gw, "POST", f"jobs/{job_id}/repair")
        assert status == 200, repaired
        assert [a["graph_id"] for a in repaired["repair"]["adopted"]] == [made["id"]]
        assert repaired["job_status"] == "completed"
        live = {o["id"] for o in await graph_sim.objects(type="adset", live=True)}
        assert live == {ids[0], made["id"]}

        status, again = await _admin(http, gw, "POST", f"jobs/{job_id}/verify", {})
        assert again["verification"]["clean"] is True
        status, trail = await _admin(http, gw, "GET", f"audit?job={job_id}")
        actions = [row["action"] for row in trail["data"]]
        assert actions.count("verification") == 3  # verify, repair's own, verify again
        assert "repair" in actions
        shown = await progress(http, gw, job_id)  # the backend's view of its job
        assert shown.body["post_verification"]["clean"] is True
        assert shown.body["post_verification"]["counts"]["missing"] == 0

        # No token → 401, nothing run; an unknown job → 404; a bad body → 400.
        async with http.post(f"{gw.admin_url}/admin/v1/jobs/{job_id}/verify") as resp:
            assert resp.status == 401
        status, missing = await _admin(http, gw, "POST", "jobs/job_00000000000000000000/verify")
        assert (status, missing["error"]["gateway_reason"]) == (404, "job_not_found")
        status, bad = await _admin(http, gw, "POST", f"jobs/{job_id}/repair", {"x": 1})
        assert (status, bad["error"]["gateway_reason"]) == (400, "bad_request")


async def test_jobs_are_listed_newest_first_with_filters_and_paging(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    environ = {"GATEWAY_ADMIN_TOKEN": ADMIN}
    async with running_gateway(
        graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}", environ=environ
    ) as gw:
        made = [await job(http, gw, {"campaign": 1}, name=f"J{n}") for n in range(3)]
        status, first = await _admin(http, gw, "GET", "jobs?limit=2")
        assert status == 200, first
        assert [j["job_id"] for j in first["data"]] == [made[2], made[1]]
        async with http.get(
            f"{gw.admin_url}{first['paging']['next']}", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as resp:
            rest = await resp.json()
        assert [j["job_id"] for j in rest["data"]] == [made[0]]
        assert "next" not in rest["paging"]
        status, pending = await _admin(http, gw, "GET", "jobs?status=pending&account=act_1001")
        assert len(pending["data"]) == 3
        status, none = await _admin(http, gw, "GET", "jobs?account=act_9")
        assert none["data"] == []
        status, bad = await _admin(http, gw, "GET", "jobs?status=nope&limit=0")
        assert status == 400
        assert len(bad["error"]["problems"]) == 2


async def test_a_completed_job_is_verified_once_in_the_background_and_repaired_if_asked(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """`[verification] after_completion`: the worker verifies each completed job once, with
    the caller's token it holds in memory; `repair_after_completion` repairs what it finds."""
    policy = policy_with(verification={"repair_after_completion": True})
    async with running_gateway(
        graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}", policy=policy, recovery=False
    ) as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 2})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        ids = [
            (await create(http, gw, "adsets", adset_params(cid, f"s{n}"), job_id=job_id)).body["id"]
            for n in range(2)
        ]
        assert (await progress(http, gw, job_id)).body["status"] == "completed"
        await _direct(http, graph_sim, "DELETE", ids[0])

        assert await verify_completed(gw.gateway) == 1

        trail = await gw.gateway.audit.audit(job_id=job_id)
        rows = {r.action: r for r in trail.items}
        assert rows["verification"].actor == "gateway"
        assert rows["verification"].detail["counts"]["missing"] == 1
        assert rows["repair"].detail["freed"][0]["graph_id"] == ids[0]
        (made,) = rows["repair"].detail["recreated"]  # from the parameters on record
        shown = (await progress(http, gw, job_id)).body
        assert shown["status"] == "completed"
        assert shown["slots"]["adset"]["created"] == 2
        live = {o["id"] for o in await graph_sim.objects(type="adset", live=True)}
        assert live == {ids[1], made["new_graph_id"]}
        assert await verify_completed(gw.gateway) == 0  # verified once: not again


async def test_a_completed_clean_job_is_verified_only_once(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    async with running_gateway(
        graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}", recovery=False
    ) as gw:
        job_id = await job(http, gw, {"campaign": 1})
        await create(http, gw, "campaigns", campaign_params(), job_id=job_id)
        assert await verify_completed(gw.gateway) == 1
        assert await verify_completed(gw.gateway) == 0
        shown = (await progress(http, gw, job_id)).body
        assert shown["post_verification"]["clean"] is True


async def test_repair_re_creates_a_silently_dropped_ad_set_through_the_normal_create_path(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """Graph lost one of the job's ad sets (nothing untracked to adopt): the repair makes it
    again from the parameters the ledger kept (no token among them), into the same slot, via
    the gateway's own proxy — intent first, counted against the job's cap."""
    async with running_gateway(graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}") as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 3})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        ids = [
            (await create(http, gw, "adsets", adset_params(cid, f"s{n}"), job_id=job_id)).body["id"]
            for n in range(3)
        ]
        lost = await gw.gateway.ledger.find_by_graph_id(ids[1])
        assert lost is not None
        assert lost.params is not None
        assert lost.params["path"] == "act_1001/adsets"
        assert "access_token" not in lost.params["params"]
        await _direct(http, graph_sim, "DELETE", ids[1])
        record = await gw.gateway.jobs.job(job_id)
        assert record is not None

        report = await verify_job(gw.gateway, record, ALICE)
        result = await repair_job(gw.gateway, record, report, ALICE)

        assert result["adopted"] == []
        assert result["not_recreated"] == [], result
        (made,) = result["recreated"]
        assert (made["graph_id"], made["slot_no"]) == (ids[1], 2)
        live = {o["id"]: o for o in await graph_sim.objects(type="adset", live=True)}
        assert set(live) == {ids[0], ids[2], made["new_graph_id"]}
        assert live[made["new_graph_id"]]["name"] == "s1"
        slots = {
            s.slot_no: s.graph_id
            for s in await gw.gateway.jobs.slots(job_id)
            if s.entity_type == "adset"
        }
        assert slots == {1: ids[0], 2: made["new_graph_id"], 3: ids[2]}
        assert (await gw.gateway.jobs.job(job_id)).status.value == "completed"  # type: ignore[union-attr]
        assert (await verify_job(gw.gateway, record, ALICE)).clean
