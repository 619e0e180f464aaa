"""Rollback on the admin port (DESIGN.md §2 invariant 8, §3.3, §6 "Rollback"; issue 6 item 2).

Against the simulator over real HTTP: a dry run lists the plan children-first and changes
nothing; executing needs a reason, reads every entity (the backup kept in its audit row),
deletes through the batch API, treats "already deleted" as done, goes on past a failed step,
and leaves the job rolled_back or partially_rolled_back; executing again finishes what is left
(also after a crash) and deletes nothing twice; a campaign tree without a job works the same.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import rollback
from gateway.model import CreateSource, EntityState, Intent, JobStatus, Outcome
from gateway.stores.redis_coord import RedisCoordinator
from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.gateway.test_jobs import (
    ALICE,
    Answer,
    V,
    adset_params,
    call,
    campaign_params,
    create,
    database_url,  # noqa: F401 - a fixture
    job,
    on_graph,
)
from tests.pgschema import scratch_schema

ADMIN = "admin-secret-for-tests"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ENV = {"GATEWAY_ADMIN_TOKEN": ADMIN, "GATEWAY_ROLLBACK_TOKEN": ALICE}
REASON = "wrong targeting, the whole job goes"
TREE_TYPES = ("campaign", "adset", "ad")


@dataclass
class Built:
    job_id: str | None
    campaign: str
    adsets: list[str]
    ads: list[str]

    @property
    def all(self) -> list[str]:
        return [self.campaign, *self.adsets, *self.ads]


@pytest.fixture
async def gw(graph_sim: SimHandle, sqlite_url: str) -> AsyncIterator[GatewayHandle]:
    """The gateway (SQLite) with an admin token and GATEWAY_ROLLBACK_TOKEN set."""
    async with running_gateway(graph_sim.url, sqlite_url, environ=ENV) as handle:
        yield handle


async def build(
    http: aiohttp.ClientSession,
    gw: GatewayHandle,
    sim: SimHandle,
    *,
    with_job: bool = True,
    adsets: int = 3,
    name: str = "Spring",
) -> Built:
    """A campaign, *adsets* ad sets and one ad in each, created through the gateway (under a
    job declaring exactly that, unless *with_job* is False)."""
    job_id = None
    if with_job:
        job_id = await job(http, gw, {"campaign": 1, "adset": adsets, "ad": adsets}, name=name)
    answer = await create(http, gw, "campaigns", campaign_params(name), job_id=job_id)
    assert answer.status == 200, answer.body
    built = Built(job_id, answer.body["id"], [], [])
    creative = await on_graph(http, sim, "act_1001/adcreatives", {"name": f"{name} creative"})
    for n in range(adsets):
        answer = await create(
            http, gw, "adsets", adset_params(built.campaign, f"{name} set {n}"), job_id=job_id
        )
        assert answer.status == 200, answer.body
        built.adsets.append(answer.body["id"])
        ad = {
            "name": f"{name} ad {n}",
            "adset_id": built.adsets[-1],
            "creative": json.dumps({"creative_id": creative}),
        }
        answer = await create(http, gw, "ads", ad, job_id=job_id)
        assert answer.status == 200, answer.body
        built.ads.append(answer.body["id"])
    return built


async def post(
    http: aiohttp.ClientSession,
    gw: GatewayHandle,
    path: str,
    body: Any = None,
    *,
    raw: str | None = None,
    headers: Mapping[str, str] | None = AUTH,
) -> Answer:
    async with http.post(
        f"{gw.admin_url}/admin/v1/{path}",
        json=body if raw is None else None,
        data=raw,
        headers=dict(headers or {}),
    ) as resp:
        text = await resp.text()
        return Answer(resp.status, json.loads(text) if text else None, resp.headers)


async def roll_back(
    http: aiohttp.ClientSession, gw: GatewayHandle, job_id: str | None, **body: Any
) -> Answer:
    return await post(http, gw, f"jobs/{job_id}/rollback", body or None)


async def execute(
    http: aiohttp.ClientSession, gw: GatewayHandle, job_id: str | None, **body: Any
) -> Answer:
    answer = await roll_back(http, gw, job_id, dry_run=False, reason=REASON, **body)
    assert answer.status == 200, answer.body
    return answer


async def audit(
    http: aiohttp.ClientSession, gw: GatewayHandle, **query: str | None
) -> list[dict[str, Any]]:
    params = {"limit": "1000", **{k: v for k, v in query.items() if v is not None}}
    async with http.get(f"{gw.admin_url}/admin/v1/audit", params=params, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        rows: list[dict[str, Any]] = (await resp.json())["data"]
        return rows


async def live(sim: SimHandle, ids: list[str] | None = None) -> set[str]:
    """Graph ids of the campaigns, ad sets and ads that exist (not deleted) on the simulator."""
    found = set()
    for kind in TREE_TYPES:
        found |= {o["id"] for o in await sim.objects(type=kind, live=True)}
    return found if ids is None else found & set(ids)


async def deletes(sim: SimHandle) -> Counter[str]:
    """How often each id was sent a DELETE (top-level or inside a batch)."""
    log = (await sim.requests(log=10_000))["log"]
    return Counter(e["path"].strip("/") for e in log if e["method"] == "DELETE")


async def job_status(http: aiohttp.ClientSession, gw: GatewayHandle, job_id: str | None) -> str:
    async with http.get(f"{gw.admin_url}/admin/v1/jobs/{job_id}", headers=AUTH) as resp:
        status: str = (await resp.json())["status"]
        return status


def steps_of(answer: Answer) -> list[tuple[str, str, int]]:
    return [(s["graph_id"], s["entity_type"], s["batch"]) for s in answer.body["steps"]]


# --- dry run ---------------------------------------------------------------------------------


async def test_a_dry_run_lists_every_entity_children_first_and_changes_nothing(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """No body, or {"dry_run": true}: 7 steps, ads then ad sets then the campaign, one level per
    batch; Graph and the job are untouched and nothing is audited."""
    built = await build(http, gw, graph_sim)
    for body in (None, {"dry_run": True}):
        answer = await post(http, gw, f"jobs/{built.job_id}/rollback", body)
        assert answer.status == 200, answer.body
        assert answer.body["dry_run"] is True
        assert answer.body["count"] == 7
        assert steps_of(answer) == [
            *[(a, "ad", 1) for a in built.ads],
            *[(s, "adset", 2) for s in built.adsets],
            (built.campaign, "campaign", 3),
        ]
        assert answer.body["job_id"] == built.job_id
        assert answer.body["campaign_id"] == built.campaign
    assert await live(graph_sim) == set(built.all)
    assert await deletes(graph_sim) == Counter()
    assert await job_status(http, gw, built.job_id) == "completed"
    assert await audit(http, gw) == []


# --- execute ---------------------------------------------------------------------------------


async def test_executing_deletes_the_job_and_audits_every_step_with_its_backup(
    http: aiohttp.ClientSession,
    graph_sim: SimHandle,
    database_url: str,  # noqa: F811
) -> None:
    """Every entity of the job is gone from Graph, each deleted once, in three batch calls;
    the job is rolled_back; one audit row per step holds the fields read before the delete;
    the token is nowhere in the trail. On SQLite and PostgreSQL."""
    async with running_gateway(graph_sim.url, database_url, environ=ENV) as gw:
        built = await build(http, gw, graph_sim)
        batches_before = (await graph_sim.requests())["operations"].get("batch", 0)

        answer = await execute(http, gw, built.job_id)

        body = answer.body
        assert body["job_status"] == "rolled_back"
        assert body["outcome"] == "ok"
        assert body["counts"] == {"ok": 7, "already_deleted": 0, "failed": 0, "skipped": 0}
        assert body["failures"] == []
        assert [s["graph_id"] for s in body["steps"]][-1] == built.campaign
        assert await live(graph_sim) == set()
        assert await deletes(graph_sim) == Counter(built.all)
        assert (await graph_sim.requests())["operations"]["batch"] == batches_before + 3
        assert await job_status(http, gw, built.job_id) == "rolled_back"

        rows = await audit(http, gw, job=built.job_id)
        assert [r["action"] for r in rows] == ["rollback", *["rollback_step"] * 7, "rollback_plan"]
        steps = {r["graph_id"]: r for r in rows if r["action"] == "rollback_step"}
        assert set(steps) == set(built.all)
        assert {r["outcome"] for r in steps.values()} == {"ok"}
        assert {r["reason"] for r in rows} == {REASON}
        assert {r["actor"] for r in rows} == {"admin"}
        assert {r["detail"]["run"] for r in rows} == {body["run"]}
        adset = steps[built.adsets[0]]["detail"]
        assert adset["entity_type"] == "adset"
        assert adset["backup"]["name"] == "Spring set 0"
        assert adset["backup"]["campaign_id"] == built.campaign
        assert adset["backup"]["targeting"] == {"geo_locations": {"countries": ["US"]}}
        assert adset["backup"]["status"] == "ACTIVE"
        assert "creative" in steps[built.ads[0]]["detail"]["backup"]
        assert steps[built.campaign]["detail"]["backup"]["objective"] == "OUTCOME_TRAFFIC"
        summary = rows[0]
        assert summary["outcome"] == "ok"
        assert summary["detail"]["status"] == "rolled_back"
        assert ALICE not in json.dumps(rows)

        metrics = await (await http.get(gw.admin_url + "/metrics")).text()
        assert 'gateway_rollback_steps_total{outcome="ok"} 7.0' in metrics
        # Three reads (the backups) and three batch calls of deletes.
        assert 'gateway_upstream_attempts_total{kind="rollback"} 6.0' in metrics


async def test_a_second_execute_is_a_no_op_that_succeeds(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """After a complete rollback, executing again sends nothing to Graph and answers success,
    naming what earlier runs did; the dry run is empty too."""
    built = await build(http, gw, graph_sim)
    await execute(http, gw, built.job_id)
    ops = (await graph_sim.requests())["operations"]

    again = await execute(http, gw, built.job_id)

    assert again.body["count"] == 0
    assert again.body["outcome"] == "ok"
    assert again.body["job_status"] == "rolled_back"
    assert sorted(again.body["done_before"]) == sorted(built.all)
    assert (await graph_sim.requests())["operations"] == ops
    dry = await roll_back(http, gw, built.job_id)
    assert (dry.body["count"], dry.body["job_status"]) == (0, "rolled_back")


async def test_a_rolled_back_job_takes_no_more_creates(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """rolled_back is a closed state: a create under the job is 409 job_closed."""
    built = await build(http, gw, graph_sim, adsets=1)
    await execute(http, gw, built.job_id)
    later = await create(http, gw, "campaigns", campaign_params(), job_id=built.job_id)
    later.refused(409, "job_closed")


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"dry_run": False},
        {"dry_run": False, "reason": "   "},
        {"dry_run": False, "reason": 7},
        {"dry_run": False, "reason": "x" * 1001},
        {"dry_run": "no", "reason": "r"},
        {"dry_run": False, "reason": "r", "dryrun": True},
        {"dry_run": False, "reason": "r", "access_token": 5},
        {"dry_run": False, "reason": "r", "actor": ""},
        [],
        "not json",
    ],
)
async def test_a_bad_body_is_400_and_deletes_nothing(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle, body: Any
) -> None:
    """Executing needs a reason; every problem of the body is named; nothing happens."""
    built = await build(http, gw, graph_sim, adsets=1)
    if body == "not json":
        answer = await post(http, gw, f"jobs/{built.job_id}/rollback", raw="{nope")
    else:
        answer = await post(http, gw, f"jobs/{built.job_id}/rollback", body)
    err = answer.error
    assert answer.status == 400, answer.body
    assert (err["gateway_reason"], err["code"]) == ("bad_request", 9004)
    assert err["problems"]
    assert await live(graph_sim) == set(built.all)
    assert await deletes(graph_sim) == Counter()
    assert await job_status(http, gw, built.job_id) == "completed"
    assert await audit(http, gw) == []


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        # The last key would have won: an execute hidden behind a dry run.
        (
            '{"dry_run": true, "dry_run": false, "reason": "r"}',
            "dry_run: given more than once in the body",
        ),
        # PostgreSQL cannot store a NUL: the audit row failed, a 500 (nothing was deleted).
        (
            '{"dry_run": false, "reason": "r", "actor": "ops\\u0000"}',
            "actor: NUL characters are not accepted",
        ),
        (
            '{"dry_run": false, "reason": "wrong\\u0000targeting"}',
            "reason: NUL characters are not accepted",
        ),
        ('{"reason": null}', f"reason: a string of at most {rollback.MAX_REASON} characters"),
        (
            '{"dry_run": false, "reason": "r", "actor": "   "}',
            "actor: a name of 1 to 128 characters, not only spaces",
        ),
        ("[" * 100_000, 'body: a JSON object {"dry_run": false, "reason": "..."}'),  # was a 500
    ],
)
async def test_an_odd_rollback_body_is_400_naming_it_on_either_ledger_and_deletes_nothing(
    http: aiohttp.ClientSession,
    graph_sim: SimHandle,
    database_url: str,  # noqa: F811 - the fixture imported above
    raw: str,
    problem: str,
) -> None:
    """Duplicate keys, NUL characters, a null reason, a blank actor, JSON nested past what the
    parser reads: 400 bad_request naming the problem, on SQLite and PostgreSQL alike; nothing
    is deleted or audited."""
    async with running_gateway(graph_sim.url, database_url, environ=ENV) as gw:
        built = await build(http, gw, graph_sim, adsets=1)

        answer = await post(http, gw, f"jobs/{built.job_id}/rollback", raw=raw)

        assert answer.status == 400, answer.body
        assert answer.error["gateway_reason"] == "bad_request"
        assert problem in answer.error["problems"]
        assert await live(graph_sim) == set(built.all)
        assert await deletes(graph_sim) == Counter()
        assert await audit(http, gw) == []
        assert await job_status(http, gw, built.job_id) == "completed"


async def test_a_body_over_the_size_limit_is_413_in_the_error_envelope(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """A body past the admin port's 1 MiB is refused in the API's envelope (it was aiohttp's
    text/plain), as bad_request with status 413; nothing is deleted."""
    built = await build(http, gw, graph_sim, adsets=1)
    huge = json.dumps({"dry_run": False, "reason": REASON, "actor": "x" * 2_000_000})

    async with http.post(
        f"{gw.admin_url}/admin/v1/jobs/{built.job_id}/rollback",
        data=io.BytesIO(huge.encode()),
        headers={**AUTH, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413, await resp.text()
        assert resp.content_type == "application/json"
        error = (await resp.json())["error"]
    assert (error["gateway_reason"], error["code"]) == ("bad_request", 9004)
    assert await live(graph_sim) == set(built.all)


async def test_without_any_graph_token_executing_is_400(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    """No access_token in the body and no GATEWAY_ROLLBACK_TOKEN: refused, nothing deleted; the
    body's access_token alone is enough, and it is not kept anywhere."""
    env = {"GATEWAY_ADMIN_TOKEN": ADMIN}
    async with running_gateway(graph_sim.url, sqlite_url, environ=env) as gw:
        built = await build(http, gw, graph_sim, adsets=1)
        refused = await roll_back(http, gw, built.job_id, dry_run=False, reason=REASON)
        assert refused.status == 400
        assert "GATEWAY_ROLLBACK_TOKEN" in refused.error["message"]
        assert await live(graph_sim) == set(built.all)

        done = await execute(http, gw, built.job_id, access_token=ALICE)

        assert done.body["counts"]["ok"] == 3
        assert ALICE not in json.dumps(done.body)
        assert ALICE not in json.dumps(await audit(http, gw))
        assert await live(graph_sim) == set()


async def test_an_unknown_job_is_404(http: aiohttp.ClientSession, gw: GatewayHandle) -> None:
    """Dry run or execute, a job the gateway does not have is 404 job_not_found."""
    for body in (None, {"dry_run": False, "reason": REASON}):
        answer = await post(http, gw, "jobs/job_nope/rollback", body)
        assert answer.status == 404
        assert answer.error["gateway_reason"] == "job_not_found"


async def test_the_rollback_and_audit_endpoints_need_the_admin_token(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """Without the bearer token → 401 and nothing is planned or deleted; a wrong one → 403."""
    built = await build(http, gw, graph_sim, adsets=1)
    execute_body = {"dry_run": False, "reason": REASON}
    for path in (f"jobs/{built.job_id}/rollback", f"campaigns/{built.campaign}/rollback"):
        answer = await post(http, gw, path, execute_body, headers=None)
        assert answer.status == 401
        answer = await post(http, gw, path, execute_body, headers={"Authorization": "Bearer x"})
        assert answer.status == 403
    async with http.get(f"{gw.admin_url}/admin/v1/audit") as resp:
        assert resp.status == 401
    assert await live(graph_sim) == set(built.all)


# --- failures, Graph's own state, resume ------------------------------------------------------


async def test_a_failed_delete_is_reported_the_rest_proceed_and_executing_again_finishes(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """Graph refuses the campaign's delete (inside the batch): every other step is done, the
    failure is reported with Graph's error, the job is partially_rolled_back (closed); executing
    again deletes just the campaign and the job is rolled_back."""
    built = await build(http, gw, graph_sim)
    await graph_sim.add_fault(
        kind="error",
        op="delete",
        path=built.campaign,
        in_batch=True,
        times=1,
        status=400,
        code=1487566,
        message="Campaign cannot be deleted now",
        is_transient=False,
    )

    first = await execute(http, gw, built.job_id)

    assert first.body["job_status"] == "partially_rolled_back"
    assert first.body["outcome"] == "partial"
    assert first.body["counts"] == {"ok": 6, "already_deleted": 0, "failed": 1, "skipped": 0}
    [failure] = first.body["failures"]
    assert failure["graph_id"] == built.campaign
    assert failure["error"]["code"] == 1487566
    assert await live(graph_sim) == {built.campaign}
    assert await job_status(http, gw, built.job_id) == "partially_rolled_back"
    later = await create(http, gw, "campaigns", campaign_params(), job_id=built.job_id)
    later.refused(409, "job_closed")

    second = await execute(http, gw, built.job_id)

    assert steps_of(second) == [(built.campaign, "campaign", 1)]
    assert second.body["job_status"] == "rolled_back"
    assert await live(graph_sim) == set()
    assert await deletes(graph_sim) == Counter([*built.all, built.campaign])
    failed = await audit(
        http, gw, job=built.job_id, action="rollback_step", graph_id=built.campaign
    )
    assert [r["outcome"] for r in failed] == ["ok", "failed"]


async def test_an_entity_deleted_on_graph_already_counts_as_done(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """An ad deleted directly on Graph is read as deleted: no DELETE is sent for it, its step
    is already_deleted (with what the read showed), and the job is rolled_back."""
    built = await build(http, gw, graph_sim)
    gone = built.ads[1]
    async with http.delete(f"{graph_sim.url}{V}/{gone}", params={"access_token": ALICE}) as resp:
        assert resp.status == 200
    sent_before = await deletes(graph_sim)

    answer = await execute(http, gw, built.job_id)

    assert answer.body["counts"] == {"ok": 6, "already_deleted": 1, "failed": 0, "skipped": 0}
    assert answer.body["job_status"] == "rolled_back"
    sent = await deletes(graph_sim) - sent_before
    assert sent == Counter({g: 1 for g in built.all if g != gone})
    [row] = await audit(http, gw, graph_id=gone)
    assert row["outcome"] == "already_deleted"
    assert row["detail"]["backup"]["status"] == "DELETED"


async def test_an_entity_graph_no_longer_has_counts_as_done(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """An id on record that Graph does not know (803 for the `ids=` read, then 100/33 read
    alone) is already_deleted without a backup; the other ads are read and deleted as usual."""
    built = await build(http, gw, graph_sim)
    ledger = gw.gateway.ledger
    now = datetime.now(UTC)
    intent = Intent("req-gone", 0, "c", "act_1001", "ad", CreateSource.SINGLE, job_id=built.job_id)
    [row_id] = await ledger.write_intents([intent], now=now)
    await ledger.settle([Outcome(row_id, EntityState.CREATED, "120299999999999999")], now=now)

    answer = await execute(http, gw, built.job_id)

    assert answer.body["counts"] == {"ok": 7, "already_deleted": 1, "failed": 0, "skipped": 0}
    assert answer.body["job_status"] == "rolled_back"
    assert "120299999999999999" not in await deletes(graph_sim)
    [row] = await audit(http, gw, graph_id="120299999999999999")
    assert (row["outcome"], row["detail"]["backup"]) == ("already_deleted", None)
    ad = (await audit(http, gw, graph_id=built.ads[0]))[0]
    assert ad["detail"]["backup"]["name"] == "Spring ad 0"


async def test_transient_failures_are_retried_within_the_call(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """A transient error on an ad's delete inside the batch, and a lost batch answer after
    Graph ran the ad sets' deletes: both are tried again (the lost one read first), and every
    entity is deleted exactly once."""
    built = await build(http, gw, graph_sim)
    await graph_sim.add_fault(kind="error", op="delete", path=built.ads[0], in_batch=True, times=1)
    await graph_sim.add_fault(kind="drop_after_commit", op="delete:adset", times=1)

    answer = await execute(http, gw, built.job_id)

    assert answer.body["counts"]["failed"] == 0
    assert answer.body["job_status"] == "rolled_back"
    assert await live(graph_sim) == set()
    sent = await deletes(graph_sim)
    assert sent[built.ads[0]] == 2  # refused once (transient), sent again
    assert all(sent[g] == 1 for g in built.all if g != built.ads[0])


async def test_a_rollback_killed_mid_way_is_finished_by_executing_again_after_a_restart(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """The gateway dies while the ad sets' batch is on its way (Graph ran it, the answer never
    came back): the restarted gateway's execute reads them deleted, deletes only the campaign,
    and no entity ever got two DELETEs."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    await graph_sim.add_fault(kind="stall_after_commit", op="batch", after=1, stall_seconds=30)
    async with running_gateway(graph_sim.url, url, environ=ENV) as gw:
        built = await build(http, gw, graph_sim)
        running = asyncio.ensure_future(
            rollback.execute(gw.gateway, job_id=built.job_id, reason=REASON, token=None)
        )
        for _ in range(500):
            if any(f["fired"] for f in await graph_sim.faults()):
                break
            await asyncio.sleep(0.01)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert await live(graph_sim) == {built.campaign}
    await graph_sim.clear_faults()

    async with running_gateway(graph_sim.url, url, environ=ENV) as gw:
        assert await job_status(http, gw, built.job_id) == "partially_rolled_back"
        dry = await roll_back(http, gw, built.job_id)
        assert [s[1] for s in steps_of(dry)] == ["adset"] * 3 + ["campaign"]

        answer = await execute(http, gw, built.job_id)

        assert answer.body["counts"] == {"ok": 1, "already_deleted": 3, "failed": 0, "skipped": 0}
        assert answer.body["job_status"] == "rolled_back"
        rows = await audit(http, gw, job=built.job_id, action="rollback_step")
        assert Counter(r["outcome"] for r in rows) == {"ok": 4, "already_deleted": 3}
    assert await live(graph_sim) == set()
    assert await deletes(graph_sim) == Counter(built.all)


async def test_a_create_still_unresolved_keeps_the_job_partially_rolled_back(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str
) -> None:
    """A create of the job whose outcome is not known yet (no id to delete) is listed as kept;
    the job stays partially_rolled_back until it is settled, and executing again then ends
    rolled_back."""
    async with running_gateway(graph_sim.url, sqlite_url, environ=ENV, recovery=False) as gw:
        built = await build(http, gw, graph_sim, adsets=1)
        ledger = gw.gateway.ledger
        now = datetime.now(UTC)
        [row_id] = await ledger.write_intents(
            [
                Intent(
                    "req-in-flight",
                    0,
                    "c",
                    "act_1001",
                    "adset",
                    CreateSource.SINGLE,
                    parent_id=built.campaign,
                    job_id=built.job_id,
                )
            ],
            now=now,
        )

        first = await execute(http, gw, built.job_id)

        assert first.body["counts"]["ok"] == 3
        assert first.body["kept"] == [
            {"graph_id": None, "entity_type": "adset", "why": "unresolved", "ledger_id": row_id}
        ]
        assert first.body["job_status"] == "partially_rolled_back"
        await ledger.settle([Outcome(row_id, EntityState.FAILED, error={"code": 1})], now=now)

        second = await execute(http, gw, built.job_id)

        assert (second.body["count"], second.body["kept"]) == (0, [])
        assert second.body["job_status"] == "rolled_back"


# --- a campaign tree without a job ----------------------------------------------------------


async def test_a_campaign_tree_recorded_without_a_job_is_rolled_back(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """/campaigns/{id}/rollback plans from the ledger: the campaign, its ad sets and ads, and a
    deep copy of an ad set with the ad it brought; another campaign is left alone."""
    built = await build(http, gw, graph_sim, with_job=False, adsets=2)
    other = await build(http, gw, graph_sim, with_job=False, adsets=1, name="Other")
    copied = await call(
        http,
        "POST",
        f"{gw.url}{V}/{built.adsets[0]}/copies",
        data={"deep_copy": "true", "status_option": "PAUSED"},
    )
    assert copied.status == 200, copied.body
    copy_id = copied.body["copied_adset_id"]
    tree = await live(graph_sim) - set(other.all)
    assert len(tree) == 7  # the campaign, 2 ad sets and 2 ads, the copy and the ad it brought

    dry = await post(http, gw, f"campaigns/{built.campaign}/rollback")
    assert dry.status == 200, dry.body
    assert dry.body["job_id"] is None
    assert {s[0] for s in steps_of(dry)} == tree
    assert [s[1] for s in steps_of(dry)] == ["ad"] * 3 + ["adset"] * 3 + ["campaign"]
    assert copy_id in {s[0] for s in steps_of(dry)}

    answer = await post(
        http, gw, f"campaigns/{built.campaign}/rollback", {"dry_run": False, "reason": REASON}
    )

    assert answer.status == 200, answer.body
    assert answer.body["job_status"] is None
    assert answer.body["counts"]["ok"] == 7
    assert await live(graph_sim) == set(other.all)
    rows = await audit(http, gw, campaign=built.campaign, action="rollback_step")
    assert len(rows) == 7
    assert {r["job_id"] for r in rows} == {None}


async def test_a_copy_moved_to_another_campaign_is_left_alone(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """The ledger records a copy by its source, not where it landed: an ad set copied into
    another campaign is planned with its source's tree, but Graph shows it elsewhere, so its
    step is skipped and it stays live."""
    built = await build(http, gw, graph_sim, with_job=False, adsets=1)
    other = await build(http, gw, graph_sim, with_job=False, adsets=1, name="Other")
    moved = await call(
        http,
        "POST",
        f"{gw.url}{V}/{built.adsets[0]}/copies",
        data={"campaign_id": other.campaign},
    )
    assert moved.status == 200, moved.body
    moved_id = moved.body["copied_adset_id"]

    answer = await post(
        http, gw, f"campaigns/{built.campaign}/rollback", {"dry_run": False, "reason": REASON}
    )

    assert answer.status == 200, answer.body
    assert answer.body["counts"] == {"ok": 3, "already_deleted": 0, "failed": 0, "skipped": 1}
    [skipped] = [s for s in answer.body["steps"] if s["outcome"] == "skipped"]
    assert skipped["graph_id"] == moved_id
    assert other.campaign in skipped["error"]["message"]
    assert await live(graph_sim) == {*other.all, moved_id}


async def test_a_campaign_the_ledger_does_not_hold_is_404(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """A campaign created directly on Graph has no recorded tree to roll back; nor has an id
    the ledger holds as something else."""
    elsewhere = await on_graph(http, graph_sim, "act_1001/campaigns", campaign_params("Direct"))
    answer = await post(http, gw, f"campaigns/{elsewhere}/rollback")
    assert answer.status == 404
    assert await live(graph_sim) == {elsewhere}
    # An ad set's id is no campaign either.
    built = await build(http, gw, graph_sim, with_job=False, adsets=1)
    answer = await post(
        http, gw, f"campaigns/{built.adsets[0]}/rollback", {"dry_run": False, "reason": REASON}
    )
    assert answer.status == 404
    assert await live(graph_sim) == {elsewhere, *built.all}


# --- the audit listing ----------------------------------------------------------------------


async def test_the_audit_is_listed_newest_first_with_filters_and_paging(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """GET /admin/v1/audit pages through a job's rows once; filters narrow; bad ones are 400;
    the job's admin view carries its trail."""
    built = await build(http, gw, graph_sim)
    await execute(http, gw, built.job_id)
    seen: list[int] = []
    url = f"{gw.admin_url}/admin/v1/audit?job={built.job_id}&limit=4"
    while url:
        async with http.get(url, headers=AUTH) as resp:
            page = await resp.json()
        seen.extend(r["id"] for r in page["data"])
        nxt = page["paging"].get("next")
        url = gw.admin_url + nxt if nxt else ""
    assert len(seen) == 9
    assert seen == sorted(seen, reverse=True)
    assert len(await audit(http, gw, action="rollback_plan")) == 1
    assert await audit(http, gw, job="job_other") == []
    for bad in ("limit=0", "limit=x", "before=z"):
        async with http.get(f"{gw.admin_url}/admin/v1/audit?{bad}", headers=AUTH) as resp:
            assert resp.status == 400
    async with http.get(f"{gw.admin_url}/admin/v1/jobs/{built.job_id}", headers=AUTH) as resp:
        assert len((await resp.json())["audit"]) == 9


async def test_an_execute_pinned_to_a_dry_run_is_refused_when_the_plan_changed(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    """The operator approved the plan of a dry run; a create landed since (the job still
    running): executing with that plan_id → 409, nothing deleted; the new plan runs."""
    async with running_gateway(
        graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}", environ={"GATEWAY_ADMIN_TOKEN": "t"}
    ) as gw:
        job_id = await job(http, gw, {"campaign": 1, "adset": 2})
        cid = (await create(http, gw, "campaigns", campaign_params(), job_id=job_id)).body["id"]
        await create(http, gw, "adsets", adset_params(cid, "a"), job_id=job_id)
        url = f"{gw.admin_url}/admin/v1/jobs/{job_id}/rollback"
        auth = {"Authorization": "Bearer t"}
        async with http.post(url, json={"dry_run": True}, headers=auth) as resp:
            shown = await resp.json()
        assert shown["count"] == 2
        await create(http, gw, "adsets", adset_params(cid, "b"), job_id=job_id)  # meanwhile
        execute = {
            "dry_run": False,
            "reason": "wrong targeting",
            "access_token": ALICE,
            "plan_id": shown["plan_id"],
        }
        async with http.post(url, json=execute, headers=auth) as resp:
            refused = await resp.json()
            assert resp.status == 409, refused
        assert refused["error"]["plan"]["count"] == 3
        assert len(await graph_sim.objects(type="adset", live=True)) == 2  # nothing deleted
        execute["plan_id"] = refused["error"]["plan"]["plan_id"]
        async with http.post(url, json=execute, headers=auth) as resp:
            done = await resp.json()
            assert resp.status == 200, done
        assert await graph_sim.objects(type="adset", live=True) == []


async def test_two_executes_at_once_take_turns_and_delete_each_entity_once(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    async with running_gateway(graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}", environ=ENV) as gw:
        built = await build(http, gw, graph_sim)
        first, second = await asyncio.gather(
            *(
                rollback.execute(gw.gateway, job_id=built.job_id, reason=REASON, token=None)
                for _ in range(2)
            )
        )
        assert {first.status, second.status} == {JobStatus.ROLLED_BACK}
    assert await live(graph_sim) == set()
    assert await deletes(graph_sim) == Counter(built.all)


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_replicas_executing_one_rollback_at_once_take_turns_through_redis(
    http: aiohttp.ClientSession, graph_sim: SimHandle, postgres_dsn: str, clean_redis: str
) -> None:
    """Two gateways on one PostgreSQL ledger and one Redis, an admin on each executing the
    same job's rollback at the same moment: the Redis lease makes them take turns, so every
    entity is sent one DELETE, the audit has one step per entity, and the second run is a
    no-op that reports the job rolled back."""
    env = {**ENV, "GATEWAY_REDIS_URL": clean_redis}
    async with AsyncExitStack() as stack:
        dsn = await stack.enter_async_context(scratch_schema(postgres_dsn))
        one = await stack.enter_async_context(running_gateway(graph_sim.url, dsn, environ=env))
        two = await stack.enter_async_context(running_gateway(graph_sim.url, dsn, environ=env))
        built = await build(http, one, graph_sim)
        first, second = await asyncio.gather(
            *(
                rollback.execute(g.gateway, job_id=built.job_id, reason=REASON, token=None)
                for g in (one, two)
            )
        )
        assert {first.status, second.status} == {JobStatus.ROLLED_BACK}
        steps = [r for r in await audit(http, one, job=built.job_id) if r.get("graph_id")]
    assert await live(graph_sim) == set()
    assert await deletes(graph_sim) == Counter(built.all)
    assert Counter(r["graph_id"] for r in steps if r["action"] == "rollback_step") == Counter(
        built.all
    )


@pytest.mark.redis
async def test_a_rollback_without_its_redis_lease_answers_503_and_deletes_nothing(
    http: aiohttp.ClientSession, graph_sim: SimHandle, sqlite_url: str, clean_redis: str
) -> None:
    """With Redis configured but gone, the lease that keeps replicas from running one
    rollback twice cannot be had: the execution is refused, nothing is sent to Graph."""
    env = {**ENV, "GATEWAY_REDIS_URL": clean_redis}
    async with running_gateway(graph_sim.url, sqlite_url, environ=env) as gw:
        built = await build(http, gw, graph_sim)
        live_coordinator = gw.gateway.coordinator
        async with RedisCoordinator.from_url("redis://127.0.0.1:1/0", timeout=0.5) as dead:
            gw.gateway.coordinator = dead
            try:
                answer = await roll_back(http, gw, built.job_id, dry_run=False, reason=REASON)
            finally:
                gw.gateway.coordinator = live_coordinator
        assert answer.status == 503, answer.body
        assert "Redis unavailable" in answer.body["error"]["message"]
        assert await deletes(graph_sim) == Counter()
        assert await live(graph_sim) == set(built.all)
        assert await job_status(http, gw, built.job_id) == "completed"
